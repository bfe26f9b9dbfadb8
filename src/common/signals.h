/*
 * Signals as file descriptors: the server and the worker block SIGTERM and
 * SIGINT in every thread and read them from a signalfd on one thread, so a
 * stop request is handled like any other event instead of in a handler.
 */
#ifndef IMAGEN_COMMON_SIGNALS_H
#define IMAGEN_COMMON_SIGNALS_H

/* Reads one signal from the signalfd `sfd` (retrying on EINTR); returns its
 * number, or 0 on error. Blocks unless the descriptor is non-blocking. */
int imagen_signal_read(int sfd);

#endif /* IMAGEN_COMMON_SIGNALS_H */

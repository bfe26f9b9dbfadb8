/*
 * Reading a signal from a signalfd (see signals.h).
 */
#include "common/signals.h"

#include <errno.h>
#include <sys/signalfd.h>
#include <unistd.h>

int
imagen_signal_read(int sfd)
{
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t r = read(sfd, &si, sizeof(si));
        if (r == (ssize_t)sizeof(si))
            return (int)si.ssi_signo;
        if (r < 0 && errno == EINTR)
            continue;
        return 0;
    }
}

#!/usr/bin/env bash
# Installs the Debian packages imagen needs, from scripts/debian-packages.txt.
#
#   scripts/install-deps.sh [section...]    sections: build test bench runtime-server
#                                           runtime-worker (default: build test)
#   scripts/install-deps.sh --list section...
#                                           print the sections' packages, one per line
#
# Installed packages are detected with dpkg-query; apt-get runs only when
# something is missing. An entry "a|b" is satisfied by either package being
# installed and installs a when neither is (kubectl, for instance, comes as
# Debian's kubernetes-client or as another vendor's kubectl package, and the
# two cannot be installed together). Uses sudo unless already root (as in a container
# build, where the Dockerfiles run it so the images and the list cannot drift).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
list="$here/debian-packages.txt"
list_only=0
if [ "${1:-}" = "--list" ]; then
    list_only=1
    shift
    if [ $# -eq 0 ]; then
        echo "install-deps.sh: --list needs at least one section" >&2
        exit 2
    fi
fi
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(build test)

# Prints the packages of one [section] of the list.
packages_of() {
    awk -v want="[$1]" '
        /^[[:space:]]*(#|$)/ { next }
        /^\[/ { cur = $1; known[cur] = 1; next }
        cur == want { print $1 }
        END { if (!(want in known)) exit 3 }
    ' "$list"
}

missing=()
for section in "${sections[@]}"; do
    if ! pkgs=$(packages_of "$section"); then
        echo "install-deps.sh: unknown section '$section' (sections: $(grep -o '^\[[a-z-]*\]' "$list" | tr -d '[]' | xargs))" >&2
        exit 2
    fi
    if [ "$list_only" -eq 1 ]; then
        # Several sections may name the same package: print it once.
        for pkg in $pkgs; do
            pkg=${pkg%%|*}
            case " ${listed:-} " in *" $pkg "*) continue ;; esac
            listed="${listed:-} $pkg"
            echo "$pkg"
        done
        continue
    fi
    for entry in $pkgs; do
        found=0
        IFS='|' read -r -a alternatives <<<"$entry"
        for pkg in "${alternatives[@]}"; do
            status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
            if [ "$status" = "install ok installed" ]; then
                found=1
                break
            fi
        done
        if [ "$found" -eq 0 ]; then
            missing+=("${alternatives[0]}")
        fi
    done
done

[ "$list_only" -eq 0 ] || exit 0

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps.sh: all packages for '${sections[*]}' are installed"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
echo "install-deps.sh: installing ${missing[*]}"
set -x
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

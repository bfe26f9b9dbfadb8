#!/usr/bin/env bash
# Installs the Debian packages imagen needs, from scripts/debian-packages.txt.
#
#   scripts/install-deps.sh [section...]    sections: build test bench (default: build test)
#
# Installed packages are detected with dpkg-query; apt-get runs only when
# something is missing. Uses sudo unless already root.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
list="$here/debian-packages.txt"
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
        echo "install-deps.sh: unknown section '$section' (sections: $(grep -o '^\[[a-z]*\]' "$list" | tr -d '[]' | xargs))" >&2
        exit 2
    fi
    for pkg in $pkgs; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        if [ "$status" != "install ok installed" ]; then
            missing+=("$pkg")
        fi
    done
done

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

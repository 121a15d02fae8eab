# Sourced by the install-*.sh scripts: installing Debian packages with apt-get, as root or through
# passwordless sudo, one apt at a time (test modules that install what they need may run side by side).
#   apt_ready WHO "HINT" PACKAGE...   checks apt-get and root, sets SUDO; says what to do and fails otherwise
#   apt_install PACKAGE...            apt-get update, then install without recommends

SUDO=()

apt_ready() {
    local who=$1 hint=$2
    shift 2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$who: $* cannot be installed: there is no apt-get here." >&2
        echo "  $hint" >&2
        return 1
    fi
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=(sudo)
        else
            echo "$who: installing $* needs root. Run as root, or:" >&2
            echo "  sudo apt-get update && sudo apt-get install -y $*" >&2
            return 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "$who: installing $* with apt-get..."
}

apt_install() {
    "${SUDO[@]}" flock /var/lock/textgen-apt.lock apt-get update -qq
    "${SUDO[@]}" flock /var/lock/textgen-apt.lock apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

#!/usr/bin/env bash
# Set up the mpox-aism site broker (Debian's mosquitto 2.0): its config, a site CA and server
# certificate, and the accounts. Run as root on the broker host; see systemd/README.md.
#
#   setup.sh [--dir DIR] [--conf-dir DIR] install        the drop-in and the ACL
#   setup.sh [--dir DIR] ca HOST [HOST...]               site CA + server certificate for HOSTs
#   setup.sh [--dir DIR] kiosk STATION_ID                add or reset a kiosk's account
#   setup.sh [--dir DIR] console                         add or reset the console's account
#   setup.sh [--dir DIR] console-send                    ... and its second one (acknowledgements out)
#
# --dir: the broker's files (passwd, acl, ca.pem, server.pem, server.key; default
# /etc/mosquitto/mpox-aism). --conf-dir: mosquitto's drop-in folder (default /etc/mosquitto/conf.d).
# kiosk/console print the new password, and nothing else, on stdout: put it in the kiosk's
# /etc/mpox-aism/mqtt-password (or the console's secret store), then `systemctl reload mosquitto`.
# The CA key (DIR/ca.key) signs server certificates only: keep it off the broker once done.
set -euo pipefail

DIR=/etc/mosquitto/mpox-aism
CONF_DIR=/etc/mosquitto/conf.d
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEFAULT_DIR=/etc/mosquitto/mpox-aism
CONSOLE=console                     # the console's account; also the staff topic space's name
STATION_RE='^[A-Za-z0-9_.-]+$'      # KioskConfig.station_id's pattern

usage() { sed -n '2,/^set /s/^# \{0,1\}//p' "$0" | sed '$d'; }
die() { echo "setup.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found (apt-get install -y $2)"; }

while [ $# -gt 0 ]; do
    case $1 in
        --dir) [ $# -ge 2 ] || die "--dir needs a directory"; DIR=$2; shift 2 ;;
        --conf-dir) [ $# -ge 2 ] || die "--conf-dir needs a directory"; CONF_DIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { usage >&2; exit 2; }
case $DIR in /*) ;; *) die "--dir must be absolute: $DIR" ;; esac
# mosquitto.conf cannot quote a path, and install writes DIR into the drop-in with sed
case $DIR in *[[:space:]\#\&\\]*) die "--dir must not contain spaces, #, & or \\: $DIR" ;; esac
DIR=${DIR%/}
CMD=$1; shift

# Files the broker reads belong to its user when there is one (mosquitto reads the password file
# and the ACL after dropping root, and re-reads them, with the certificates, on reload).
owner() {  # mode file...
    local mode=$1; shift
    chmod "$mode" "$@"
    if [ "$(id -u)" = 0 ] && id -u mosquitto >/dev/null 2>&1; then chown mosquitto:mosquitto "$@"; fi
}

add_account() {  # user name -> password on stdout
    need mosquitto_passwd mosquitto
    need openssl openssl
    local user=$1 pw
    mkdir -p "$DIR"
    pw=$(openssl rand -base64 24)
    # the password goes through a pipe, never on a command line (ps would show it)
    if [ -f "$DIR/passwd" ]; then
        printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd "$DIR/passwd" "$user" >/dev/null
    else
        (umask 077; printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd -c "$DIR/passwd" "$user" >/dev/null)
    fi
    owner 0600 "$DIR/passwd"
    printf '%s\n' "$pw"
    echo "account $user set in $DIR/passwd; the broker reads it on: systemctl reload mosquitto" >&2
}

case $CMD in
    install)
        [ $# -eq 0 ] || die "install takes no arguments"
        mkdir -p "$DIR" "$CONF_DIR"
        install -m 0644 "$HERE/acl" "$DIR/acl"
        owner 0640 "$DIR/acl"
        # the drop-in names its files under the default folder; another --dir is written in
        sed "s#$DEFAULT_DIR/#$DIR/#g" "$HERE/mpox-aism.conf" >"$CONF_DIR/mpox-aism.conf"
        chmod 0644 "$CONF_DIR/mpox-aism.conf"
        echo "installed $CONF_DIR/mpox-aism.conf and $DIR/acl" >&2
        ;;
    ca)
        [ $# -ge 1 ] || die "ca needs the broker's host names and/or IP addresses, as the kiosks dial them"
        need openssl openssl
        mkdir -p "$DIR"
        san=""
        for h in "$@"; do
            if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+="${san:+,}IP:$h"; else san+="${san:+,}DNS:$h"; fi
        done
        if [ -f "$DIR/ca.pem" ] && [ ! -f "$DIR/ca.key" ]; then
            die "$DIR/ca.pem exists but ca.key is not here (kept offline?): put it back to sign a new server" \
                "certificate; a new CA would lock out every kiosk that trusts the old one"
        fi
        if [ ! -f "$DIR/ca.key" ]; then
            (umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$DIR/ca.key")
            openssl req -x509 -new -key "$DIR/ca.key" -sha256 -days 3650 -subj "/CN=mpox-aism site CA" \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
                -out "$DIR/ca.pem"
            echo "made the site CA: $DIR/ca.pem (give it to every kiosk as mqtt.tls.ca_certs)" >&2
        fi
        (umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$DIR/server.key")
        openssl req -new -key "$DIR/server.key" -subj "/CN=$1" -out "$DIR/server.csr"
        openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
            -sha256 -days 825 -out "$DIR/server.pem" -extfile <(printf '%s\n' \
            "subjectAltName=$san" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth") 2>/dev/null
        rm -f "$DIR/server.csr"
        chmod 0600 "$DIR/ca.key"
        chmod 0644 "$DIR/ca.pem" "$DIR/server.pem"
        owner 0600 "$DIR/server.key"
        echo "server certificate $DIR/server.pem for $san (825 days)" >&2
        ;;
    kiosk)
        [ $# -eq 1 ] || die "kiosk needs one station id"
        [[ $1 =~ $STATION_RE ]] || die "station id $1 is not a valid station_id (letters, digits, . _ -)"
        [ "$1" != "$CONSOLE" ] && [ "$1" != "$CONSOLE-send" ] || \
            die "'$1' is one of the console's accounts (and '$CONSOLE' its staff topic space), not a station"
        add_account "$1"
        ;;
    console)
        [ $# -eq 0 ] || die "console takes no arguments (the account is '$CONSOLE')"
        add_account "$CONSOLE"
        ;;
    console-send)
        [ $# -eq 0 ] || die "console-send takes no arguments (the account is '$CONSOLE-send')"
        add_account "$CONSOLE-send"
        ;;
    *)
        echo "unknown command: $CMD" >&2; usage >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Install or update the mpox-aism kiosk daemon as a systemd service. Idempotent: rerun after
# pulling a new version. Needs root, systemd as PID 1, make and python3.11.
#
#   sudo systemd/install.sh [--prefix /opt/mpox-aism] [--dry-run]
#
# --dry-run prints every step and command without changing anything (no root needed).
set -euo pipefail

PREFIX=/opt/mpox-aism
DRY_RUN=0
SVC=mpox-aism
ETC=/etc/mpox-aism
CACHE=/var/cache/mpox-aism
UNIT_DST=/etc/systemd/system/$SVC.service
DROPIN_DIR=/etc/systemd/system/$SVC.service.d
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV=${MPOX_AISM_INSTALL_DEV:-/dev}   # where to look for Jetson nodes (the tests point it elsewhere)

usage() { sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || { echo "--prefix needs a directory" >&2; exit 2; }; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --dry-run|-n) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case $PREFIX in /*) ;; *) echo "--prefix must be absolute: $PREFIX" >&2; exit 2 ;; esac
PREFIX=${PREFIX%/}
# The sandbox hides these from the service (ProtectHome=yes, PrivateTmp=yes).
case $PREFIX/ in
    /home/*|/root/*|/run/user/*|/tmp/*|/var/tmp/*)
        if [ "$DRY_RUN" = 0 ]; then echo "--prefix $PREFIX is invisible to the sandboxed service" >&2; exit 2; fi
        echo "warning: --prefix $PREFIX is invisible to the sandboxed service (a real run refuses it)" ;;
esac

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
# Run a command, or only show it under --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then printf '    +'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
# Write stdin to a file atomically (mode, path); under --dry-run show it (long files: key lines).
write_file() {
    local mode=$1 dst=$2 tmp content
    if [ "$DRY_RUN" = 1 ]; then
        content=$(cat)
        printf '    + write %s (mode %s, %s lines)\n' "$dst" "$mode" "$(printf '%s\n' "$content" | wc -l)"
        if [ "$(printf '%s\n' "$content" | wc -l)" -le 12 ]; then printf '%s\n' "$content"
        else printf '%s\n' "$content" | grep -E '^(ExecStart|Documentation)='; fi | sed 's/^/      | /'
    else
        tmp=$(mktemp "$dst.XXXXXX"); cat >"$tmp"; chmod "$mode" "$tmp"; mv -f "$tmp" "$dst"
    fi
}

if [ "$DRY_RUN" = 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "run as root (or with --dry-run)" >&2; exit 1; }
    # systemctl would fail half-way through otherwise (containers, chroots, CI machines).
    [ -d /run/systemd/system ] || { echo "PID 1 is not systemd here; use --dry-run to see the steps" >&2; exit 1; }
fi
for tool in make python3.11; do
    if ! command -v "$tool" >/dev/null; then
        if [ "$DRY_RUN" = 1 ]; then note "warning: $tool not found (make setup needs it)"
        else echo "$tool is required (make setup)" >&2; exit 1; fi
    fi
done
if [ "$DRY_RUN" = 1 ]; then echo "dry run: nothing is changed; commands are shown with +"; fi

step "service user $SVC"
if id -u "$SVC" >/dev/null 2>&1; then
    note "exists"
else
    # --user-group: Group=mpox-aism must exist whatever USERGROUPS_ENAB says.
    run useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "mpox-aism kiosk daemon" "$SVC"
fi
for g in video render; do   # cameras (/dev/video*), GPU (Jetson nodes are group video)
    if getent group "$g" >/dev/null; then run usermod -aG "$g" "$SVC"; else note "no group $g here, skipped"; fi
done

step "code → $PREFIX"
if [ "$(realpath -m "$SRC")" = "$(realpath -m "$PREFIX")" ]; then
    note "already running from $PREFIX"
else
    run mkdir -p "$PREFIX"
    # The venv is built in place (its paths are absolute); runs/ and caches are local state.
    if command -v rsync >/dev/null; then
        # --delete spares excluded paths, so the built .venv in $PREFIX survives.
        run rsync -a --delete --exclude=/.git --exclude=/.venv --exclude=/runs --exclude=.pytest_cache \
            --exclude=.ruff_cache --exclude=__pycache__ --exclude='*.egg-info' "$SRC/" "$PREFIX/"
    else
        note "rsync not found: copying with tar (files deleted upstream stay in $PREFIX)"
        excludes=(--exclude=./.git --exclude=./.venv --exclude=./runs --exclude=.pytest_cache
                  --exclude=.ruff_cache --exclude=__pycache__ --exclude='*.egg-info')
        if [ "$DRY_RUN" = 1 ]; then
            note "+ tar -C $SRC ${excludes[*]} -cf - . | tar -C $PREFIX -xf -"
        else
            tar -C "$SRC" "${excludes[@]}" -cf - . | tar -C "$PREFIX" -xf -
        fi
    fi
fi
run make -C "$PREFIX" setup
# At run time /opt is read-only (ProtectSystem=strict): compile the project's .pyc now.
run "$PREFIX/.venv/bin/python" -m compileall -q "$PREFIX/mpox_aism" "$PREFIX/kiosk" "$PREFIX/pipeline" \
    "$PREFIX/training" "$PREFIX/export"
run chmod -R go-w,go+rX "$PREFIX"

step "MediaPipe models → $CACHE/mediapipe (the service's \$MPOX_AISM_CACHE)"
run install -d -m 0750 -o "$SVC" -g "$SVC" "$CACHE"
# `make setup` fetched them into the invoking user's cache; reuse that rather than download again.
if [ -d "$HOME/.cache/mpox-aism/mediapipe" ] && [ ! -d "$CACHE/mediapipe" ]; then
    run cp -a "$HOME/.cache/mpox-aism/mediapipe" "$CACHE/mediapipe"
fi
run "$PREFIX/.venv/bin/python" -c \
    "import sys; sys.path.insert(0, '$PREFIX'); from mpox_aism.pipeline.mediapipe_models import ensure_models; ensure_models('$CACHE/mediapipe')"
run chown -R "$SVC:$SVC" "$CACHE"

step "configuration $ETC"
run install -d -m 0750 -o root -g "$SVC" "$ETC"
if [ -e "$ETC/kiosk.yaml" ]; then
    note "$ETC/kiosk.yaml exists, kept"
elif [ -f "$PREFIX/configs/kiosk.yaml" ] || [ -f "$SRC/configs/kiosk.yaml" ]; then
    example=$PREFIX/configs/kiosk.yaml; [ -f "$example" ] || example=$SRC/configs/kiosk.yaml
    run install -m 0640 -o root -g "$SVC" "$example" "$ETC/kiosk.yaml"
    note "edit $ETC/kiosk.yaml for this checkpoint (station_id, cameras, mqtt.url)"
else
    note "no example configs/kiosk.yaml in this checkout: write $ETC/kiosk.yaml yourself"
fi
if [ -e "$ETC/mqtt-password" ]; then
    # LoadCredential= is read by PID 1 (root); nobody else needs the file.
    run chown root:root "$ETC/mqtt-password"
    run chmod 0600 "$ETC/mqtt-password"
    have_password=1
else
    have_password=0
fi

step "systemd unit $UNIT_DST"
unit=$(sed -e "s#/opt/mpox-aism/#$PREFIX/#g" "$SRC/systemd/$SVC.service")
printf '%s\n' "$unit" | write_file 0644 "$UNIT_DST"
# Jetson: the GPU is a set of /dev/nvhost-*, /dev/nvmap and /dev/nvgpu/* nodes whose /proc/devices
# group names are platform names (e.g. 17000000.ga10b), so the unit cannot name them portably;
# allow the nodes this board actually has, by path.
nodes=()
for n in "$DEV"/nvhost-* "$DEV"/nvmap "$DEV"/nvgpu/*/*; do if [ -c "$n" ]; then nodes+=("$n"); fi; done
if [ ${#nodes[@]} -gt 0 ]; then
    run mkdir -p "$DROPIN_DIR"
    { echo "# Written by install.sh from the Jetson device nodes present at install time."
      echo "[Service]"
      printf 'DeviceAllow=%s rw\n' "${nodes[@]}"; } | write_file 0644 "$DROPIN_DIR/50-jetson.conf"
else
    note "no Jetson device nodes here: no Jetson drop-in"
fi
if [ "$DRY_RUN" = 0 ]; then
    # verify only warns on bad values: show what it says, do not stop on it.
    systemd-analyze verify "$UNIT_DST" || note "systemd-analyze verify reported problems (above)"
fi

step "enable and (re)start"
run systemctl daemon-reload
run systemctl enable "$SVC"
if [ "$have_password" = 1 ]; then
    # restart, not just start: a rerun picks up new code, unit and config.
    run systemctl restart "$SVC"
    note "status: systemctl status $SVC    logs: journalctl -u $SVC -f"
else
    note "NOT started: $ETC/mqtt-password is missing (LoadCredential= would fail the start)."
    note "Put the broker password there (an empty file if the broker has none), root-only:"
    note "  install -m 0600 -o root -g root /dev/null $ETC/mqtt-password && \${EDITOR:-vi} $ETC/mqtt-password"
    note "then: systemctl start $SVC"
fi

#!/bin/sh
# Stand-in for https://get.k3s.io on siteflow test hosts. Follows the real script's contract:
# INSTALL_K3S_EXEC / arguments pick server or agent and its flags (K3S_URL without a command
# means agent), K3S_* variables go to /etc/systemd/system/<unit>.env (0600), the unit file,
# k3s-killall.sh and <unit>-uninstall.sh are written, and the service is enabled and
# restarted — unless INSTALL_K3S_SKIP_ENABLE / INSTALL_K3S_SKIP_START, or unless nothing
# (binary, unit, env file) changed and INSTALL_K3S_FORCE_RESTART is not true.
# "Downloading" copies the simulator from /usr/local/lib/k3s-sim with the version
# (INSTALL_K3S_VERSION, default stable) baked in; INSTALL_K3S_SKIP_DOWNLOAD=true keeps the
# binary already at ${BIN_DIR}/k3s.
set -e
SIM_DIR=${K3S_SIM_DIR:-/usr/local/lib/k3s-sim}
STABLE_VERSION=$(cat "${SIM_DIR}/stable-version" 2>/dev/null || echo v1.31.4+k3s1)

info() { echo "[INFO]  $*"; }
fatal() { echo "[ERROR]  $*" >&2; exit 1; }
quote() { for arg in "$@"; do printf '%s\n' "$arg" | sed "s/'/'\\\\''/g;1s/^/'/;\$s/\$/'/"; done; }
quote_indent() { printf ' \\\n'; for arg in "$@"; do printf '\t%s \\\n' "$(quote "$arg")"; done; }

eval set -- ${INSTALL_K3S_EXEC} $(quote "$@")

case "$1" in
    (-*|"")
        if [ -z "${K3S_URL}" ]; then
            CMD_K3S=server
        else
            if [ -z "${K3S_TOKEN}" ] && [ -z "${K3S_TOKEN_FILE}" ]; then
                fatal "Defaulted k3s exec command to 'agent' because K3S_URL is defined, but K3S_TOKEN or K3S_TOKEN_FILE is not defined."
            fi
            CMD_K3S=agent
        fi ;;
    (*) CMD_K3S=$1; shift ;;
esac
case "${K3S_URL}" in ""|https://*) ;; *) fatal "Only https:// URLs are supported for K3S_URL (have ${K3S_URL})" ;; esac
CMD_K3S_EXEC="${CMD_K3S}$(quote_indent "$@")"
if [ -n "${INSTALL_K3S_NAME}" ]; then SYSTEM_NAME=k3s-${INSTALL_K3S_NAME};
elif [ "${CMD_K3S}" = server ]; then SYSTEM_NAME=k3s; else SYSTEM_NAME=k3s-${CMD_K3S}; fi
SUDO=sudo; [ "$(id -u)" -eq 0 ] && SUDO=
SYSTEMD_TYPE=${INSTALL_K3S_TYPE:-notify}
[ "${CMD_K3S}" = agent ] && [ -z "${INSTALL_K3S_TYPE}" ] && SYSTEMD_TYPE=exec
BIN_DIR=${INSTALL_K3S_BIN_DIR:-/usr/local/bin}
SYSTEMD_DIR=${INSTALL_K3S_SYSTEMD_DIR:-/etc/systemd/system}
SERVICE_K3S=${SYSTEM_NAME}.service
UNINSTALL_K3S_SH=${BIN_DIR}/${SYSTEM_NAME}-uninstall.sh
KILLALL_K3S_SH=${BIN_DIR}/k3s-killall.sh
FILE_K3S_SERVICE=${SYSTEMD_DIR}/${SERVICE_K3S}
FILE_K3S_ENV=${SYSTEMD_DIR}/${SERVICE_K3S}.env
hashes() { $SUDO sha256sum ${BIN_DIR}/k3s ${FILE_K3S_SERVICE} ${FILE_K3S_ENV} 2>&1 || true; }
PRE_INSTALL_HASHES=$(hashes)

if [ "${INSTALL_K3S_SKIP_DOWNLOAD}" = true ] || [ "${INSTALL_K3S_SKIP_DOWNLOAD}" = binary ]; then
    info 'Skipping k3s download and verify'
    [ -x "${BIN_DIR}/k3s" ] || fatal "Executable k3s binary not found at ${BIN_DIR}/k3s"
else
    VERSION_K3S=${INSTALL_K3S_VERSION:-$STABLE_VERSION}
    info "Using ${VERSION_K3S} as release"
    TMP_BIN=$(mktemp)
    cp "${SIM_DIR}/k3s-sim" "${TMP_BIN}"
    printf '\n#K3S-SIM-VERSION=%s\n' "${VERSION_K3S}" >> "${TMP_BIN}"
    if [ -x "${BIN_DIR}/k3s" ] && [ "$(sha256sum < "${TMP_BIN}")" = "$(sha256sum < "${BIN_DIR}/k3s")" ]; then
        info 'Skipping binary downloaded, installed k3s matches hash'
        rm -f "${TMP_BIN}"
    else
        info "Installing k3s to ${BIN_DIR}/k3s"
        chmod 755 "${TMP_BIN}"
        $SUDO mkdir -p "${BIN_DIR}"
        $SUDO mv -f "${TMP_BIN}" "${BIN_DIR}/k3s"
    fi
fi

for cmd in kubectl crictl ctr; do
    if [ ! -e "${BIN_DIR}/${cmd}" ] || [ "${INSTALL_K3S_SYMLINK}" = force ]; then
        [ "${INSTALL_K3S_SYMLINK}" = skip ] && continue
        info "Creating ${BIN_DIR}/${cmd} symlink to k3s"
        $SUDO ln -sf k3s "${BIN_DIR}/${cmd}"
    fi
done

$SUDO tee "${KILLALL_K3S_SH}" >/dev/null <<EOK
#!/bin/sh
[ \$(id -u) -eq 0 ] || exec sudo \$0 \$@
for service in ${SYSTEMD_DIR}/k3s*.service; do
    [ -s \$service ] && systemctl stop \$(basename \$service)
done
exit 0
EOK
$SUDO chmod 755 "${KILLALL_K3S_SH}"

$SUDO tee "${UNINSTALL_K3S_SH}" >/dev/null <<EOU
#!/bin/sh
set -x
[ \$(id -u) -eq 0 ] || exec sudo \$0 \$@
${KILLALL_K3S_SH}
systemctl disable ${SYSTEM_NAME}
systemctl reset-failed ${SYSTEM_NAME}
systemctl daemon-reload
rm -f ${FILE_K3S_SERVICE}
rm -f ${FILE_K3S_ENV}
remove_uninstall() { rm -f ${UNINSTALL_K3S_SH}; }
trap remove_uninstall EXIT
if ls ${SYSTEMD_DIR}/k3s*.service >/dev/null 2>&1; then
    set +x; echo 'Additional k3s services installed, skipping uninstall of k3s'; set -x
    exit
fi
for cmd in kubectl crictl ctr; do
    [ -L ${BIN_DIR}/\$cmd ] && rm -f ${BIN_DIR}/\$cmd
done
rm -rf /etc/rancher/k3s /run/k3s /var/lib/rancher/k3s /var/lib/kubelet
rm -f ${BIN_DIR}/k3s ${KILLALL_K3S_SH}
EOU
$SUDO chmod 755 "${UNINSTALL_K3S_SH}"

$SUDO systemctl disable ${SYSTEM_NAME} >/dev/null 2>&1 || true
$SUDO mkdir -p "${SYSTEMD_DIR}"
info "env: Creating environment file ${FILE_K3S_ENV}"
$SUDO touch "${FILE_K3S_ENV}"
$SUDO chmod 0600 "${FILE_K3S_ENV}"
sh -c export | while read x v; do echo $v; done | grep -E '^(K3S|CONTAINERD)_' | $SUDO tee "${FILE_K3S_ENV}" >/dev/null || true
info "systemd: Creating service file ${FILE_K3S_SERVICE}"
$SUDO tee "${FILE_K3S_SERVICE}" >/dev/null <<EOS
[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=${SYSTEMD_TYPE}
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-${FILE_K3S_ENV}
KillMode=process
Delegate=yes
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStart=${BIN_DIR}/k3s \\
    ${CMD_K3S_EXEC}

EOS

[ "${INSTALL_K3S_SKIP_ENABLE}" = true ] && exit 0
info "systemd: Enabling ${SYSTEM_NAME} unit"
$SUDO systemctl enable ${FILE_K3S_SERVICE} >/dev/null 2>&1
$SUDO systemctl daemon-reload >/dev/null
[ "${INSTALL_K3S_SKIP_START}" = true ] && exit 0
POST_INSTALL_HASHES=$(hashes)
if [ "${PRE_INSTALL_HASHES}" = "${POST_INSTALL_HASHES}" ] && [ "${INSTALL_K3S_FORCE_RESTART}" != true ]; then
    info 'No change detected so skipping service start'
    exit 0
fi
info "systemd: Starting ${SYSTEM_NAME}"
$SUDO systemctl restart ${SYSTEM_NAME}

#!/usr/bin/env bash
# make deb-check: install the package built by `make deb`, run it, remove and purge it,
# and prove that nothing of it is left. As root, on Debian; systemd need not be running.
#
#   packaging/deb/check.sh [DEB]      (default: dist/syncd_<version>_<arch>.deb)
#
# 1. lintian (errors and warnings fail; overrides: packaging/deb/lintian-overrides), and
#    the package holds only the product: no demo source, dev cluster, benchmark or test
# 2. dpkg -i: maintainer scripts quiet but for their notes; enabled, not started
# 3. the installed command: --version, check-config without and with credentials, as an
#    unprivileged user (like the unit's DynamicUser), systemd-analyze verify
# 4. the daemon from the package against a throwaway PostgreSQL and the demo source:
#    ready, synced, metrics, SIGTERM exits 0 (the demo source and the cluster are the
#    repository's devtools/, run with the package's Python: they are not in the package)
# 5. dpkg -i again (the upgrade path), dpkg -r, dpkg -P: the listing of every path the
#    package touches is the same after the purge as before the installation
# 6. purge keeps /etc/syncd/credentials when it holds secrets
# Exits non-zero at the first failure; a package it installed is purged again.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=/usr/bin/python3

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok   %s\n' "$*"; }
fail() {
	printf '    FAIL %s\n' "$*" >&2
	exit 1
}
indent() { sed 's/^/    | /'; }

[ "$(id -u)" = 0 ] || fail "deb-check installs a package: run it as root"
command -v dpkg >/dev/null || fail "dpkg is missing: this runs on Debian or Ubuntu only"
version=$("$PY" -c 'import tomllib; print(tomllib.load(open("'"$repo"'/pyproject.toml", "rb"))["project"]["version"])')
deb=${1:-$repo/dist/syncd_${version}_$(dpkg --print-architecture).deb}
[ -f "$deb" ] || fail "$deb is missing: run \`make deb\` first"

work=$(mktemp -d "${TMPDIR:-/tmp}/syncd-deb-check.XXXXXX")
chmod 0755 "$work" # the postgres and nobody users go in there
installed_by_us=
daemon_pid=
demo_pid=
cleanup() {
	status=$?
	[ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
	[ -z "$demo_pid" ] || kill "$demo_pid" 2>/dev/null || true
	if [ -d "$work/pg" ] && [ -x /usr/lib/syncd/bin/python ]; then
		PYTHONPATH="$work/dev" /usr/lib/syncd/bin/python -m devtools.devcluster stop "$work/pg" >/dev/null 2>&1 || true
	fi
	if [ -n "$installed_by_us" ] && dpkg-query -W syncd >/dev/null 2>&1; then
		echo "purging the syncd package this check installed" >&2
		dpkg -P syncd >/dev/null 2>&1 || true
		rm -f /etc/syncd/credentials/check-secret
		rmdir /etc/syncd/credentials /etc/syncd 2>/dev/null || true
	fi
	rm -rf "$work"
	[ "$status" = 0 ] && printf '\nPASS: make deb-check\n' || printf '\nFAIL: make deb-check\n' >&2
}
trap cleanup EXIT

# Run a dpkg command, show all it printed, fail on a non-zero exit or on anything on
# stderr but the informational lines of deb-systemd-helper ("Created symlink ...",
# "Removed ...") and the warnings listed in $allowed_stderr.
allowed_stderr=
run_dpkg() {
	printf '    $ %s\n' "$*"
	local rc=0
	DEBIAN_FRONTEND=noninteractive "$@" >"$work/out" 2>"$work/err" || rc=$?
	indent <"$work/out"
	indent <"$work/err"
	[ "$rc" = 0 ] || fail "$* exited $rc"
	if grep -vE "^(Created symlink |Removed \"?/etc/systemd/)${allowed_stderr:+|$allowed_stderr}" "$work/err" >"$work/bad"; then
		fail "$* printed on stderr: $(head -3 "$work/bad")"
	fi
}

# Everything the package puts on the machine or makes deb-systemd-helper create.
snapshot() {
	local path
	for path in /usr/lib/syncd /usr/bin/syncd /etc/syncd /lib/systemd/system/syncd.service \
		/usr/share/doc/syncd /usr/share/man/man1/syncd.1.gz /usr/share/lintian/overrides/syncd \
		/var/lib/private/syncd /var/lib/syncd /etc/systemd/system; do
		if [ -e "$path" ] || [ -L "$path" ]; then
			find "$path" -printf '%M %u:%g %p -> %l\n' | LC_ALL=C sort
		else
			echo "absent $path"
		fi
	done
	# deb-systemd-helper's state: entries only (it keeps its empty directories).
	for path in /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked; do
		[ -d "$path" ] && find "$path" -mindepth 1 -printf '%M %p -> %l\n' | LC_ALL=C sort
	done
	dpkg-query -W -f='dpkg: ${db:Status-Abbrev} ${Version}\n' syncd 2>/dev/null || echo "dpkg: syncd unknown"
}

# Tools this check uses, from the distribution when missing (like `make system-packages`).
step "system packages"
missing=()
for pkg in python3 init-system-helpers systemd lintian; do
	dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || missing+=("$pkg")
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "    installing: ${missing[*]}"
	apt-get update -q | indent
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" | indent
fi
ok "python3, init-system-helpers, systemd, lintian, postgresql"
if [ -d /run/systemd/system ]; then
	echo "    systemd is running: the unit's enablement and start/stop are exercised for real"
else
	echo "    systemd is not running: the maintainer scripts must cope without it"
fi

if dpkg-query -W syncd >/dev/null 2>&1; then
	fail "a syncd package is already on this machine ($(dpkg-query -W -f='${db:Status-Abbrev}${Version}' syncd)): purge it first (dpkg -P syncd)"
fi

step "lintian $(basename "$deb")"
lintian_user=()
if id nobody >/dev/null 2>&1; then # lintian advises against root; nobody can read $work
	cp "$deb" "$work/lint.deb"
	chmod 0644 "$work/lint.deb"
	lintian_user=(runuser -u nobody -- env HOME="$work")
fi
rc=0
(cd "$work" && "${lintian_user[@]}" lintian --fail-on error,warning --display-info "$work/lint.deb" 2>&1) \
	>"$work/lintian" || rc=$?
indent <"$work/lintian"
[ "$rc" = 0 ] || fail "lintian found errors or warnings"
ok "lintian: no errors or warnings ($(grep -c '^[IP]: ' "$work/lintian" || true) informational tags shown above)"

step "contents: the product only"
dpkg-deb -c "$deb" | awk '{print $6}' >"$work/contents"
if grep -E '/(devtools|bench|tests)/|demo_|devcluster' "$work/contents" >"$work/bad"; then
	indent <"$work/bad"
	fail "the package holds development code"
fi
ok "$(grep -c '/site-packages/syncd/.*\.py$' "$work/contents") modules of syncd, no demo, dev cluster, benchmark or test"

step "before: listing of the package's paths"
snapshot >"$work/before"
ok "$(wc -l <"$work/before") entries"

step "install: dpkg -i"
installed_by_us=1
run_dpkg dpkg -i "$deb"
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' syncd)" = "ii " ] || fail "syncd is not installed"
ok "installed: $(dpkg-query -W -f='${Package} ${Version} ${Architecture}' syncd)"
grep -q "enabled but not started" "$work/out" || fail "postinst did not say what is left to do"
ok "postinst said the service is enabled but not started"
[ "$(readlink /etc/systemd/system/multi-user.target.wants/syncd.service)" = /lib/systemd/system/syncd.service ] \
	|| fail "syncd.service is not enabled (no multi-user.target.wants link)"
ok "enabled: multi-user.target.wants/syncd.service"
if [ -d /run/systemd/system ]; then
	! systemctl --quiet is-active syncd.service || fail "syncd.service was started at installation"
	ok "not started at installation"
fi
[ -n "$(find /usr/lib/syncd -name '*.pyc' -print -quit)" ] || fail "postinst compiled no byte-code"
ok "byte-code compiled by postinst"

step "the installed command"
out=$(/usr/bin/syncd --version)
[ "$out" = "syncd $version" ] || fail "syncd --version said '$out', not 'syncd $version'"
ok "/usr/bin/syncd --version: $out"
[ "$(readlink -f /usr/lib/syncd/bin/python)" = "$(readlink -f /usr/bin/python3)" ] \
	|| fail "/usr/lib/syncd/bin/python does not lead to /usr/bin/python3"
ok "/usr/lib/syncd/bin/python -> $(readlink /usr/lib/syncd/bin/python) -> ... -> $(readlink -f /usr/lib/syncd/bin/python)"
[ "$(stat -c '%a %U' /etc/syncd/credentials)" = "700 root" ] || fail "/etc/syncd/credentials is not 0700 root"
ok "/etc/syncd/credentials: 0700 root"
# The unit runs syncd as a DynamicUser: everything must work for an unprivileged user.
# setpriv execs (no process in between): the daemon's own exit status comes back.
as_user=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups --)
"${as_user[@]}" /usr/lib/syncd/bin/python -c \
	'import sys, yaml, psycopg2, syncd.service.daemon; assert sys.prefix == "/usr/lib/syncd"; assert yaml.__with_libyaml__'
ok "as nobody: imports syncd.service.daemon, psycopg2, PyYAML with libyaml"

rc=0
env -u CREDENTIALS_DIRECTORY "${as_user[@]}" /usr/bin/syncd -c /etc/syncd/syncd.yaml check-config \
	>"$work/out" 2>"$work/err" || rc=$?
indent <"$work/err"
[ "$rc" = 2 ] || fail "check-config without credentials exited $rc, not 2"
grep -q Traceback "$work/err" && fail "check-config printed a traceback"
grep -qvE '^/etc/syncd/syncd\.yaml:[0-9]+: [a-z_.]+: ' "$work/err" && fail "check-config printed other than FILE:LINE: key: message"
ok "check-config without credentials: exit 2, one FILE:LINE line per missing secret"

install -d -o nobody -m 0700 "$work/credentials"
for secret in db-password ingest-api-key source-api-key; do
	printf 'check-%s\n' "$secret" >"$work/credentials/$secret"
done
chown nobody "$work"/credentials/*
chmod 0600 "$work"/credentials/*
out=$(CREDENTIALS_DIRECTORY=$work/credentials "${as_user[@]}" /usr/bin/syncd -c /etc/syncd/syncd.yaml check-config)
echo "$out" | indent
ok "check-config with CREDENTIALS_DIRECTORY: exit 0"

rc=0
systemd-analyze --no-pager verify /lib/systemd/system/syncd.service >"$work/out" 2>&1 || rc=$?
indent <"$work/out"
if [ "$rc" != 0 ] || [ -s "$work/out" ]; then
	fail "systemd-analyze verify: exit $rc, or it had something to say"
fi
ok "systemd-analyze verify /lib/systemd/system/syncd.service: clean"

step "run: the packaged daemon against a throwaway PostgreSQL and the demo source"
venv_py=/usr/lib/syncd/bin/python
# devtools/ from a copy, so that the repository's syncd/ never shadows the installed one.
mkdir -p "$work/dev"
cp -r "$repo/devtools" "$work/dev/"
chmod -R a+rX "$work/dev"
dev_py=(env PYTHONPATH="$work/dev" "$venv_py")
dsn=$("${dev_py[@]}" -m devtools.devcluster start "$work/pg" --tuned-for-tests)
ok "PostgreSQL: $dsn"
read -r demo_port http_port < <("${dev_py[@]}" -c 'from devtools.devcluster import free_port; print(free_port(), free_port())')
"${as_user[@]}" "${dev_py[@]}" -m devtools.demo_source --port "$demo_port" >"$work/demo.log" 2>&1 &
demo_pid=$!
"${dev_py[@]}" - "$dsn" "$demo_port" "$http_port" "$work/syncd.yaml" <<'PYEOF'
import sys, time
from devtools.demo_config import demo_config, dump
dsn, demo_port, http_port, path = sys.argv[1:]
since = time.strftime("%Y-%m-%d 00:00:00", time.gmtime(time.time() - 2 * 86400))
config = demo_config(dsn, f"http://127.0.0.1:{demo_port}", entities=["task", "user"],
                     initial_from=since, listen=f"127.0.0.1:{http_port}")
open(path, "w").write(dump(config))
PYEOF
chmod 0644 "$work/syncd.yaml"
"${as_user[@]}" /usr/bin/syncd -c "$work/syncd.yaml" run >"$work/daemon.log" 2>&1 &
daemon_pid=$!
"$PY" - "$http_port" "$daemon_pid" "$version" <<'PYEOF' || { indent <"$work/daemon.log"; fail "the daemon did not get ready and sync"; }
import json, os, sys, time, urllib.request
port, pid, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
base = f"http://127.0.0.1:{port}"
def get(path):
    with urllib.request.urlopen(base + path, timeout=5) as answer:
        return answer.status, answer.read().decode()
deadline = time.monotonic() + 90
stage = "ready"
while time.monotonic() < deadline:
    if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
        sys.exit("    the daemon exited")
    try:
        if stage == "ready" and get("/readyz")[0] == 200:
            print("    ok   /readyz: 200")
            stage = "synced"
        if stage == "synced":
            status = json.loads(get("/status")[1])
            if status and all(e.get("last_status") == "ok" for e in status):
                print("    ok   /status: " + ", ".join(
                    f"{e['entity']} {e['last_status']} (watermark {e['watermark']})" for e in status))
                metrics = get("/metrics")[1]
                line = f'syncd_build_info{{version="{version}"}} 1.0'
                assert line in metrics, "no " + line
                print("    ok   /metrics: " + line)
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(f"    not {stage} within 90 s")
PYEOF
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=
[ "$rc" = 0 ] || { indent <"$work/daemon.log"; fail "after SIGTERM the daemon exited $rc, not 0"; }
ok "SIGTERM: exit 0 ($(wc -l <"$work/daemon.log") log lines, $(grep -c '"level": *"error"' "$work/daemon.log" || true) errors)"
kill "$demo_pid"
wait "$demo_pid" 2>/dev/null || true
demo_pid=
"${dev_py[@]}" -m devtools.devcluster stop "$work/pg" >/dev/null
rm -rf "$work/pg"
ok "demo source and PostgreSQL stopped"

step "upgrade path: dpkg -i of the same package again"
run_dpkg dpkg -i "$deb"
[ -n "$(find /usr/lib/syncd -name '*.pyc' -print -quit)" ] || fail "no byte-code after the upgrade"
ok "reinstalled, byte-code compiled again, $(/usr/bin/syncd --version)"

step "remove: dpkg -r syncd"
run_dpkg dpkg -r syncd
for path in /usr/lib/syncd /usr/bin/syncd /lib/systemd/system/syncd.service; do
	if [ -e "$path" ] || [ -L "$path" ]; then fail "$path is still there after dpkg -r"; fi
done
ok "program, command and unit gone"
[ -f /etc/syncd/syncd.yaml ] || fail "dpkg -r removed the conffile /etc/syncd/syncd.yaml"
ok "conffile /etc/syncd/syncd.yaml kept until purge"

step "purge: dpkg -P syncd"
run_dpkg dpkg -P syncd
installed_by_us=
snapshot >"$work/after"
if ! diff -u "$work/before" "$work/after" >"$work/diff"; then
	indent <"$work/diff"
	fail "the machine differs from before the installation"
fi
ok "listing identical to before the installation ($(wc -l <"$work/after") entries)"

step "purge keeps secrets: install, put a secret, remove, purge"
installed_by_us=1
run_dpkg dpkg -i "$deb"
printf 'secret\n' >/etc/syncd/credentials/check-secret
chmod 0600 /etc/syncd/credentials/check-secret
# dpkg itself notes the directory it could not remove.
allowed_stderr="dpkg: warning: while removing syncd, directory '/etc/syncd/credentials' not empty so not removed"
run_dpkg dpkg -r syncd
run_dpkg dpkg -P syncd
allowed_stderr=
installed_by_us=
[ -f /etc/syncd/credentials/check-secret ] || fail "purge removed a secret"
grep -q "credentials is not empty: kept" "$work/out" || fail "postrm did not say it kept the credentials"
ok "the secret survived the purge, and postrm said so"
rm -f /etc/syncd/credentials/check-secret
rmdir /etc/syncd/credentials /etc/syncd
snapshot >"$work/after"
diff -u "$work/before" "$work/after" | indent
cmp -s "$work/before" "$work/after" || fail "the machine differs from before the installation"
ok "once the secret is removed by hand, the listing is identical to before"

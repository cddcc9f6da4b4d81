#!/usr/bin/env bash
# Build the Debian package: dist/syncd_<version>_<arch>.deb (see packaging/deb/README.md).
#
#   packaging/deb/build.sh [OUTPUT_DIR]        (make deb)
#
# The application goes into its own virtual environment under /usr/lib/syncd, made with
# Debian's /usr/bin/python3; the project wheel and its runtime dependencies are installed
# into it with pip (from the package index pip is configured with). The venv is built in a
# staging root and every mention of the staging path is rewritten to /usr/lib/syncd; the
# build fails if any build-machine path is left in the package. Works as root or as a
# normal user (dpkg-deb --root-owner-group), needs the network only for the package index.
#
# Environment: SOURCE_DATE_EPOCH (default: the last commit's time) fixes every timestamp;
# DEB_MAINTAINER overrides the Maintainer field.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
outdir=${1:-$repo/dist}
PY=/usr/bin/python3          # Debian's Python: the venv's bin/python points at it
PREFIX=/usr/lib/syncd

say() { printf '==> %s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# --- build tools, from the distribution when missing ---------------------------------
missing=()
[ -x "$PY" ] || missing+=(python3)
"$PY" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v readelf >/dev/null && command -v strip >/dev/null || missing+=(binutils)
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing: this builds on Debian or Ubuntu only"
if [ "${#missing[@]}" -gt 0 ]; then
	say "installing: ${missing[*]}"
	sudo=()
	[ "$(id -u)" = 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -q
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cd "$repo"
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	|| die "$PY is Python $pyver; syncd needs 3.11 or newer"
version=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
arch=$(dpkg --print-architecture)      # the wheels pip picks are this machine's
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -c safe.directory="$repo" -C "$repo" log -1 --format=%ct 2>/dev/null || stat -c %Y pyproject.toml)
fi
export SOURCE_DATE_EPOCH
export PYTHONDONTWRITEBYTECODE=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
umask 022

work=$(mktemp -d "${TMPDIR:-/tmp}/syncd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/root
venv=$stage$PREFIX
say "syncd $version ($arch), Python $pyver, staging in $work"

# --- the project wheel, built from a clean copy (nothing is written into the checkout) --
mkdir -p "$work/src" "$work/wheels"
tar -C "$repo" -c \
	--exclude=./.git --exclude=./.venv --exclude=./var --exclude=./dist --exclude=./build \
	--exclude='*.egg-info' --exclude=__pycache__ --exclude='./.*_cache' . \
	| tar -C "$work/src" -x

# --- the virtual environment --------------------------------------------------------
"$PY" -m venv "$venv"
"$venv/bin/python" -m pip wheel --quiet --no-cache-dir --no-deps --wheel-dir "$work/wheels" "$work/src"
wheel=$(ls "$work"/wheels/syncd-"$version"-*.whl)
pins=()
[ -f "$here/constraints.txt" ] && pins=(--constraint "$here/constraints.txt")
"$venv/bin/python" -m pip install --quiet --no-compile --no-warn-script-location --no-cache-dir --use-pep517 \
	"${pins[@]}" "$wheel"
"$venv/bin/python" -m pip check
# pip and setuptools only served the build: a packaged venv is not for installing into.
"$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
rmdir "$venv/include/python$pyver" "$venv/include"     # empty: nothing is compiled here
# Policy: a link within /usr is relative; it still leads to /usr/bin/python3.
pylink=$(realpath -m -s --relative-to="$PREFIX/bin" "$PY")     # ../../../bin/python3
for link in "$venv"/bin/*; do
	if [ -L "$link" ] && [ "$(readlink "$link")" = "$PY" ]; then
		ln -sfn "$pylink" "$link"
	fi
done
# Shared objects: not executable, and stripped as dh_strip would where a wheel ships one
# with its symbol table. The others are left byte for byte as built (auditwheel patched
# them; rewriting them again is a risk not worth an informational lintian tag).
find "$venv" -type f \( -name '*.so' -o -name '*.so.*' \) -print0 | while IFS= read -r -d '' so; do
	if readelf -S --wide "$so" | grep -q ' \.symtab '; then
		strip --remove-section=.comment --remove-section=.note --strip-unneeded "$so"
	fi
	chmod 0644 "$so"
done
# direct_url.json records where the wheel was installed from (a path of this machine).
rm -f "$venv"/lib/python*/site-packages/syncd-*.dist-info/direct_url.json
find "$venv" -depth \( -name __pycache__ -o -name '*.pyc' \) -exec rm -rf {} +

# Shebangs (bin/syncd) and anything else naming the staging path: say /usr/lib/syncd.
grep -rlIF -- "$stage" "$stage" | while IFS= read -r file; do
	sed -i "s|$stage$PREFIX|$PREFIX|g; s|$stage||g" "$file"
done
# The dist-info RECORD files list every file with its hash: make them true again.
"$PY" - "$venv" <<'PYEOF'
import base64, csv, hashlib, io, pathlib, sys
venv = pathlib.Path(sys.argv[1])
for record in venv.glob("lib/python*/site-packages/*.dist-info/RECORD"):
    site = record.parent.parent
    rows = []
    for row in csv.reader(record.read_text(encoding="utf-8").splitlines()):
        path = (site / row[0]).resolve(strict=False)
        if row[0].endswith("direct_url.json") and not path.exists():
            continue
        if row[1] and path.is_file():
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            row = [row[0], "sha256=" + digest.decode(), str(len(data))]
        rows.append(row)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    record.write_text(out.getvalue(), encoding="utf-8")
PYEOF
head -1 "$venv/bin/syncd" | grep -qxE "#!$PREFIX/bin/python(3(\.[0-9]+)?)?" \
	|| die "unexpected shebang in bin/syncd: $(head -1 "$venv/bin/syncd")"
# Follow bin/python inside the package: the first path that leaves it must be $PY.
python_target=$("$PY" - "$stage" "$PREFIX/bin/python" <<'PYEOF'
import os, sys
stage, path = sys.argv[1], sys.argv[2]
for _ in range(40):
    if not os.path.islink(stage + path):
        break
    path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(stage + path)))
print(path)
PYEOF
)
[ "$python_target" = "$PY" ] || die "the venv's bin/python leads to $python_target, not $PY"

# Lowest glibc the bundled binary wheels need (manylinux tags), for Depends: libc6.
glibc=$("$PY" - "$venv" <<'PYEOF'
import pathlib, re, sys
legacy = {"1": (2, 5), "2010": (2, 12), "2014": (2, 17)}
need = (2, 0)
for wheel in pathlib.Path(sys.argv[1]).glob("lib/python*/site-packages/*.dist-info/WHEEL"):
    found = []
    for tag in re.findall(r"^Tag: \S+-\S+-(\S+)$", wheel.read_text(encoding="utf-8"), re.M):
        if m := re.match(r"manylinux_(\d+)_(\d+)_", tag):
            found.append((int(m[1]), int(m[2])))
        elif m := re.match(r"manylinux(1|2010|2014)_", tag):
            found.append(legacy[m[1]])
    if found:  # a wheel runs with the least demanding of its tags
        need = max(need, min(found))
print("%d.%d" % need)
PYEOF
)

# --- the rest of the file system ----------------------------------------------------
install -d "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/syncd" \
	"$stage/usr/share/doc/syncd" "$stage/usr/share/man/man1" "$stage/usr/share/lintian/overrides"
install -d -m 0700 "$stage/etc/syncd/credentials"
ln -s ../lib/syncd/bin/syncd "$stage/usr/bin/syncd"
install -m 0644 syncd.service "$stage/lib/systemd/system/syncd.service"
install -m 0644 etc/syncd.yaml "$stage/etc/syncd/syncd.yaml"
install -m 0644 README.md docs/*.md "$stage/usr/share/doc/syncd/"
install -m 0644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/syncd"
gzip -9n <"$here/syncd.1" >"$stage/usr/share/man/man1/syncd.1.gz"
maintainer=${DEB_MAINTAINER:-$(sed -n 's/^Maintainer: //p' "$here/control.in")}
{
	printf 'syncd (%s) unstable; urgency=medium\n\n' "$version"
	printf '  * Release %s; the changes are in the project history.\n\n' "$version"
	printf ' -- %s  %s\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$stage/usr/share/doc/syncd/changelog.gz"
first_year=$(git -c safe.directory="$repo" -C "$repo" log --reverse --format=%cd --date=format:%Y 2>/dev/null | head -1 || true)
last_year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
years=${first_year:-$last_year}
[ "$years" = "$last_year" ] || years="$years-$last_year"
{
	sed -e "s/@YEARS@/$years/" -e "s/@PYVER@/$pyver/" "$here/copyright"
	"$PY" - "$venv" <<'PYEOF'
import pathlib, sys
from email.parser import Parser
venv = pathlib.Path(sys.argv[1])
for meta in sorted(venv.glob("lib/python*/site-packages/*.dist-info/METADATA")):
    msg = Parser().parsestr(meta.read_text(encoding="utf-8"), headersonly=True)
    if msg["Name"] == "syncd":
        continue
    lic = msg.get("License-Expression") or ""
    if not lic:
        first = (msg.get("License") or "").strip().splitlines()[:1]
        lic = first[0] if first and len(first[0]) < 60 else ""
    if not lic:
        lic = ", ".join(c.split(" :: ")[-1] for c in msg.get_all("Classifier") or []
                        if c.startswith("License ::")) or "see its license files"
    urls = dict(u.split(", ", 1) for u in msg.get_all("Project-URL") or [] if ", " in u)
    url = msg.get("Home-page") or next(
        (v for k, v in urls.items() if k.lower() in ("homepage", "home", "source", "code")), "")
    print(f"\n{msg['Name']} {msg['Version']}: {lic}")
    if url:
        print(f"  {url}")
    libs = sorted(meta.parent.parent.glob(meta.parent.name.split("-")[0] + ".libs/*"))
    if libs:
        sbom = meta.parent / "sboms"
        where = f" (described in {meta.parent.name}/sboms/)" if sbom.is_dir() else ""
        print(f"  bundles these libraries, in {libs[0].parent.name}/{where}:")
        for lib in libs:
            print("    " + lib.name)
PYEOF
} >"$stage/usr/share/doc/syncd/copyright"

# --- normalize: owners come from --root-owner-group; modes and times from here ------
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -perm /0111 -exec chmod 0755 {} +
find "$stage" -type f ! -perm /0111 -exec chmod 0644 {} +
find "$stage" -type f \( -name '*.so' -o -name '*.so.*' \) -exec chmod 0644 {} +
chmod 0700 "$stage/etc/syncd/credentials"

# --- control area -------------------------------------------------------------------
install -d "$stage/DEBIAN"
installed_size=$(find "$stage" -path "$stage/DEBIAN" -prune -o \( -type f -o -type l \) -printf '%s\n' \
	| awk '{ kb += int(($1 + 1023) / 1024) } END { print kb }')
next_minor=$("$PY" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
	-e "s/@PYTHON_MIN@/$pyver/" -e "s/@PYTHON_NEXT@/$next_minor/" -e "s/@GLIBC@/$glibc/" \
	"$here/control.in" >"$stage/DEBIAN/control"
if [ -n "${DEB_MAINTAINER:-}" ]; then
	sed -i "s/^Maintainer: .*/Maintainer: $DEB_MAINTAINER/" "$stage/DEBIAN/control"
fi
install -m 0644 "$here/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$stage/DEBIAN/"
(
	cd "$stage"
	find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
		| grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) \
		| xargs -d '\n' md5sum >DEBIAN/md5sums
)
chmod 0644 "$stage/DEBIAN/md5sums"
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# --- nothing of this machine may be left in the package -----------------------------
leaks=$(grep -rlF -e "$work" -e "$repo" "$stage" || true)
[ -z "$leaks" ] || die "build paths left in the package:
$leaks"
find "$stage" -name __pycache__ | grep -q . && die "__pycache__ left in the package"

mkdir -p "$outdir"
deb=$outdir/syncd_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
say "built $deb ($(du -h "$deb" | cut -f1), installed size ${installed_size} KiB)"

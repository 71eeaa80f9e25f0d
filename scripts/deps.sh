#!/usr/bin/env bash
# deps.sh - installs the Debian packages moe needs, only those missing. Safe to run repeatedly.
#   scripts/deps.sh          build + test dependencies + the data sets (fortunes, Fashion-MNIST,
#                            the Ding German-English dictionary)
#   scripts/deps.sh --python also python3-numpy, python3-torch, python3-pip, python3-setuptools (the
#                            Python package and its tests: make test)
#   scripts/deps.sh --torch  also python3-torch/numpy/nltk (to regenerate golden files, run bench/*.py)
#   scripts/deps.sh --valgrind  also valgrind
#   scripts/deps.sh --fuzz   also clang and its libFuzzer runtime (make fuzz)
#   scripts/deps.sh --corpus also the texts of the large English corpus (make corpus)
#   scripts/deps.sh --s2s    also the packages whose German message catalogues make the
#                            translation corpus `messages` (make corpus-s2s; scripts/s2s_corpus.py)
set -euo pipefail
pkgs=(gcc make cmake pkg-config libopenblas-dev libxsmm-dev zlib1g-dev libopenmpi-dev openmpi-bin dataset-fashion-mnist fortunes dict-freedict-deu-eng)
case "${1:-}" in
  --python) pkgs+=(python3-torch python3-numpy python3-pip python3-setuptools) ;;
  --torch) pkgs+=(python3-torch python3-numpy python3-nltk) ;;
  --valgrind) pkgs+=(valgrind) ;;
  --fuzz) pkgs+=(clang libclang-rt-14-dev) ;;
  --corpus) pkgs+=(dict-gcide dict-wn dict-jargon dict-foldoc python3-doc linux-doc python3) ;;
  --s2s) pkgs+=(python3 postgresql-15 postgresql-client-15 libpq5 iso-codes binutils-common wget man-db
                libpam-runtime libgtk2.0-common xz-utils xkb-data xdg-user-dirs tar systemd shared-mime-info sed
                psmisc procps net-tools make m4 login libidn2-0 libgnutls30 libglib2.0-data
                libgdk-pixbuf2.0-common libelf1 libdpkg-perl libc-l10n libapt-pkg6.0 krb5-locales grep gnupg-l10n
                git gettext-base gettext findutils dpkg diffutils coreutils bash apt adduser) ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then exit 0; fi
echo "deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "deps: need root to install: apt-get install ${missing[*]}" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/bin/sh
# Make sure Fashion-MNIST's four idx files are in $FASHION_MNIST_DIR (default: where Debian's
# dataset-fashion-mnist package puts them). Installs the package when apt-get is available;
# otherwise says how to get the files. Never downloads anything else.
set -eu
DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

have_all() {
    for f in $FILES; do
        [ -f "$DIR/$f.gz" ] || [ -f "$DIR/$f" ] || return 1
    done
}

have_all && exit 0
if [ "$DIR" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "Fashion-MNIST is not in $DIR: installing Debian's dataset-fashion-mnist (30 MB)" >&2
    $SUDO apt-get install -y dataset-fashion-mnist || { $SUDO apt-get update && $SUDO apt-get install -y dataset-fashion-mnist; }
    have_all && exit 0
fi
cat >&2 <<MSG
Fashion-MNIST is not in $DIR and could not be installed with apt-get. Either
  - on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist
  - or copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
    t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist into a folder
    and run: make demo FASHION_MNIST_DIR=that/folder
  - or let torchvision download it: sknet train --config fashion_mnist --data-dir DIR --download
MSG
exit 1

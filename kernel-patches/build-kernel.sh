#!/usr/bin/env bash
# Fetches the RPAL RFC v2 series by Message-Id, applies it to Linux v6.15, builds the kernel with
# kernel-patches/rpal.config and builds librpal.so from the series' samples/rpal/librpal.
# The series is downloaded at build time and never stored in this repository.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR

# The cover letter of "[RFC v2 00/35] optimize cost of inter-process communication" (Bo Li,
# 2025-05-30). b4 and lore find the whole thread from it.
readonly COVER_MSGID=cover.1748594840.git.libo.gcs85@bytedance.com
readonly SERIES_VERSION=2
readonly SERIES_LENGTH=35
readonly KERNEL_VERSION=6.15
readonly KERNEL_TARBALL_URL=https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-$KERNEL_VERSION.tar.xz
readonly KERNEL_SUMS_URL=https://cdn.kernel.org/pub/linux/kernel/v6.x/sha256sums.asc
readonly KERNEL_GIT_URL=https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git
readonly LORE_BASE=https://lore.kernel.org/all

usage() {
	cat <<EOF
Usage: kernel-patches/build-kernel.sh [options]

Builds an RPAL kernel and librpal.so:
  1. downloads the RPAL RFC v$SERIES_VERSION series ($SERIES_LENGTH patches) by its cover Message-Id
       $COVER_MSGID
     with b4 when installed, else from $LORE_BASE/<Message-Id>/t.mbox.gz
  2. gets Linux v$KERNEL_VERSION (kernel.org tarball checked against sha256sums.asc, or git)
  3. applies the series with git am (on a new branch rpal-rfc-v$SERIES_VERSION)
  4. configures: x86_64 defconfig (or --config FILE) + kernel-patches/rpal.config, and checks
     that every option of the fragment is in the result
  5. builds bzImage and modules (or Debian packages with --deb)
  6. builds librpal.so from samples/rpal/librpal (and the sample client/server when they build)
Results go to WORK/out/: bzImage, config, System.map, librpal.so (+ *.deb with --deb).

Options:
  --work DIR         working directory (default kernel-patches/work, gitignored)
  --src DIR          use this Linux v$KERNEL_VERSION tree (git or unpacked tarball) instead of downloading
  --git              download v$KERNEL_VERSION with git clone --depth 1 instead of the tarball
  --series FILE      use an mbox of the series already downloaded (e.g. from 'b4 am'); no network
  --config FILE      base config instead of x86_64 defconfig (e.g. /boot/config-\$(uname -r))
  --jobs N           parallel make jobs (default: number of CPUs)
  --deb              also build installable Debian packages (make bindeb-pkg)
  --librpal-only     fetch, apply and build librpal.so, but not the kernel
  --dry-run          print every step and command, change nothing, download nothing
  -h, --help         this text

Needs: x86-64 host, git, curl, make, gcc, flex, bison, bc, libelf and libssl headers, xz, cpio.
Run as root on Debian/Ubuntu and the missing ones are installed with apt-get.
EOF
}

log() { printf 'build-kernel: %s\n' "$*" >&2; }
die() {
	printf 'build-kernel: error: %s\n' "$*" >&2
	exit 1
}
value() { [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value; see --help"; }

work=$SCRIPT_DIR/work src="" use_git=0 series="" base_config="" jobs="" make_deb=0 librpal_only=0 dry_run=0
while (($# > 0)); do
	case "$1" in
	--work) value "$@" && work=$2 && shift 2 ;;
	--src) value "$@" && src=$2 && shift 2 ;;
	--git) use_git=1 && shift ;;
	--series) value "$@" && series=$2 && shift 2 ;;
	--config) value "$@" && base_config=$2 && shift 2 ;;
	--jobs) value "$@" && jobs=$2 && shift 2 ;;
	--deb) make_deb=1 && shift ;;
	--librpal-only) librpal_only=1 && shift ;;
	--dry-run) dry_run=1 && shift ;;
	-h | --help) usage && exit 0 ;;
	*) die "unknown argument '$1'; see --help" ;;
	esac
done

[[ $(uname -m) == x86_64 ]] || die "RPAL is x86-64 only and this script does not cross-compile; this host is $(uname -m)"
[[ -z $jobs || $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number, got '$jobs'"
jobs=${jobs:-$(nproc)}
[[ -z $series || -r $series ]] || die "--series '$series' does not exist or is not readable"
[[ -z $base_config || -r $base_config ]] || die "--config '$base_config' does not exist or is not readable"
[[ -z $src || -f $src/Makefile ]] || die "--src '$src' is not a Linux source tree (no Makefile)"
fragment=$SCRIPT_DIR/rpal.config
[[ -r $fragment ]] || die "config fragment $fragment is missing; it ships with this repository"

# Prints a command, then runs it unless --dry-run.
run() {
	printf '+ %s\n' "$*" >&2
	((dry_run)) || "$@"
}

# --- host tools --------------------------------------------------------------------------------
# Only what this run needs: --librpal-only skips the kernel build's tools, --series and --src
# skip the downloaders.
missing=()
tools=(git:git make:make gcc:gcc)
[[ -n $series && -n $src ]] || tools+=(curl:curl)
[[ -n $src ]] || tools+=(xz:xz-utils tar:tar)
((librpal_only)) || tools+=(flex:flex bison:bison bc:bc cpio:cpio perl:perl)
for tool in "${tools[@]}"; do
	command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((!librpal_only)); then
	[[ -e /usr/include/libelf.h || -e /usr/include/elfutils/libelf.h ]] || missing+=(libelf-dev)
	[[ -e /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
fi
if ((${#missing[@]} > 0)); then
	if ((dry_run)); then
		log "would install: ${missing[*]}"
	elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		log "installing ${missing[*]} with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
			die "apt-get install ${missing[*]} failed; run 'apt-get update' and retry"
	else
		die "missing build tools: ${missing[*]} (Debian/Ubuntu package names); install them, e.g. sudo apt-get install ${missing[*]}"
	fi
fi

run mkdir -p "$work/out" "$work/series"
out=$work/out

# --- 1. the series -------------------------------------------------------------------------------
series_mbox=$work/series/rpal-rfc-v$SERIES_VERSION.mbx

# Keeps, from a whole-thread mbox, the first copy of each "[RFC v2 NN/35]" patch (not replies,
# not the cover letter) in order, and refuses an incomplete series.
select_patches() {
	local thread=$1 dest=$2 split=$work/series/split
	rm -rf "$split"
	mkdir -p "$split"
	git mailsplit --mboxrd -o"$split" "$thread" >/dev/null || die "$thread is not a readable mbox"
	local f subject n
	declare -A by_number=()
	for f in "$split"/*; do
		# Header lines may be folded; unfold the Subject before matching it.
		subject=$(sed -n '/^$/q; p' "$f" | awk '/^[Ss]ubject:/ { s = $0; while ((getline l) > 0 && l ~ /^[ \t]/) s = s l; print s; exit }')
		# "[RFC v2 07/35]"; tolerate "PATCH"/"RFC" in either order, never "Re:" replies.
		[[ $subject =~ ^[Ss]ubject:[[:space:]]*\[[^]]*v${SERIES_VERSION}[[:space:]]+0*([0-9]+)/$SERIES_LENGTH\] ]] || continue
		n=${BASH_REMATCH[1]}
		((n >= 1 && n <= SERIES_LENGTH)) || continue
		[[ -n ${by_number[$n]-} ]] || by_number[$n]=$f
	done
	local missing_numbers=()
	for ((n = 1; n <= SERIES_LENGTH; n++)); do
		[[ -n ${by_number[$n]-} ]] || missing_numbers+=("$n")
	done
	((${#missing_numbers[@]} == 0)) ||
		die "the downloaded mbox lacks patches ${missing_numbers[*]} of $SERIES_LENGTH of RFC v$SERIES_VERSION; install b4 (apt-get install b4) or download the series yourself and pass --series FILE"
	for ((n = 1; n <= SERIES_LENGTH; n++)); do
		# git am wants an mbox: each message starts with exactly one "From " separator line;
		# mailsplit keeps the one a message came with, and replaces none when there was none.
		f=${by_number[$n]}
		[[ $(head -c 5 "$f") == "From " ]] || printf 'From rpal-mesh-build Mon Sep 17 00:00:00 2001\n'
		cat "$f"
		printf '\n'
	done >"$dest"
	rm -rf "$split"
}

fetch_series() {
	local raw=$work/series/raw.mbox
	if [[ -n $series ]]; then
		log "using the series from $series"
		run cp "$series" "$raw"
	elif [[ -s $series_mbox ]]; then
		log "series already downloaded: $series_mbox"
		return 0
	elif command -v b4 >/dev/null; then
		log "downloading the series with b4 (it checks the DKIM attestation)"
		run b4 am -o "$work/series" -n raw -v "$SERIES_VERSION" "$COVER_MSGID" ||
			die "b4 could not fetch $COVER_MSGID; check network access to lore.kernel.org, or pass --series FILE"
		run mv "$work/series/raw.mbx" "$raw"
	else
		local url=$LORE_BASE/$COVER_MSGID/t.mbox.gz
		log "b4 not installed; downloading the whole thread from $url"
		run curl -fsSL --retry 3 -o "$raw.gz" "$url" ||
			die "could not download $url; check network access to lore.kernel.org, or pass --series FILE"
		run gunzip -f "$raw.gz" || die "$raw.gz is not gzip: lore answered something else"
	fi
	((dry_run)) && return 0
	# Whatever the source (b4, a lore thread with replies, a file), keep exactly patches 1..35.
	select_patches "$raw" "$series_mbox.tmp"
	mv "$series_mbox.tmp" "$series_mbox"
	rm -f "$raw"
	log "series ready: $SERIES_LENGTH patches in $series_mbox"
}

# --- 2. the kernel tree --------------------------------------------------------------------------
fetch_kernel() {
	if [[ -n $src ]]; then
		linux=$(cd "$src" && pwd)
	else
		linux=$work/linux-$KERNEL_VERSION
		if [[ -f $linux/Makefile ]]; then
			log "using the tree already in $linux"
		elif ((use_git)); then
			run git clone --depth 1 --branch "v$KERNEL_VERSION" "$KERNEL_GIT_URL" "$linux" ||
				die "git clone of v$KERNEL_VERSION from $KERNEL_GIT_URL failed; check network access or pass --src DIR"
		else
			local tarball=$work/linux-$KERNEL_VERSION.tar.xz
			if [[ ! -s $tarball ]]; then
				run curl -fsSL --retry 3 -o "$tarball.part" "$KERNEL_TARBALL_URL" ||
					die "could not download $KERNEL_TARBALL_URL; check network access, or use --git or --src DIR"
				run curl -fsSL --retry 3 -o "$work/sha256sums.asc" "$KERNEL_SUMS_URL" ||
					die "could not download $KERNEL_SUMS_URL to check the tarball"
				if ((!dry_run)); then
					local want got
					want=$(awk -v f="linux-$KERNEL_VERSION.tar.xz" '$2 == f { print $1 }' "$work/sha256sums.asc")
					got=$(sha256sum "$tarball.part" | cut -d' ' -f1)
					[[ -n $want ]] || die "sha256sums.asc has no line for linux-$KERNEL_VERSION.tar.xz"
					[[ $want == "$got" ]] || {
						rm -f "$tarball.part"
						die "linux-$KERNEL_VERSION.tar.xz had sha256 $got, kernel.org says $want: a corrupt or tampered download (deleted; rerun to retry)"
					}
				fi
				run mv "$tarball.part" "$tarball"
			fi
			run mkdir -p "$linux.tmp"
			run tar -xJf "$tarball" -C "$linux.tmp" --strip-components=1
			run mv "$linux.tmp" "$linux"
		fi
	fi
	((dry_run)) && return 0
	local version
	version=$(make -s -C "$linux" kernelversion)
	[[ $version == "$KERNEL_VERSION" || $version == "$KERNEL_VERSION.0" ]] ||
		die "$linux is Linux $version; the RPAL RFC v$SERIES_VERSION series applies to v$KERNEL_VERSION only"
}

# --- 3. apply ------------------------------------------------------------------------------------
apply_series() {
	local branch=rpal-rfc-v$SERIES_VERSION
	if [[ -d $linux/samples/rpal/librpal ]]; then
		log "the series is already applied in $linux (samples/rpal/librpal exists)"
		return 0
	fi
	if [[ ! -e $linux/.git ]]; then
		# git am needs a repository; a tarball tree becomes one with a single commit.
		log "making $linux a git repository so git am can apply the series"
		run git -C "$linux" init -q
		run git -C "$linux" add -A
		run git -C "$linux" -c user.name=rpal-mesh -c user.email=rpal-mesh@localhost commit -q -m "Linux $KERNEL_VERSION"
	fi
	if ((!dry_run)) && [[ -n $(git -C "$linux" status --porcelain --untracked-files=no) ]]; then
		die "$linux has uncommitted changes; commit or stash them before applying the series"
	fi
	run git -C "$linux" checkout -q -B "$branch"
	run git -C "$linux" -c user.name=rpal-mesh -c user.email=rpal-mesh@localhost am -q --3way "$series_mbox" || {
		git -C "$linux" am --abort 2>/dev/null || true
		die "the series does not apply to $linux (git am failed; aborted): is it a clean v$KERNEL_VERSION tree?"
	}
	((dry_run)) || log "applied $SERIES_LENGTH patches on branch $branch"
}

# --- 4. configure --------------------------------------------------------------------------------
configure() {
	if [[ -n $base_config ]]; then
		run cp "$base_config" "$linux/.config"
	else
		run make -s -C "$linux" ARCH=x86_64 x86_64_defconfig
	fi
	run "$linux/scripts/kconfig/merge_config.sh" -m -O "$linux" "$linux/.config" "$fragment"
	run make -s -C "$linux" ARCH=x86_64 olddefconfig
	((dry_run)) && return 0
	# merge_config only warns; an option that did not survive would make a kernel without RPAL.
	local line name want got bad=()
	while IFS= read -r line; do
		if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
			name=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
		elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
			name=${BASH_REMATCH[1]} want=n
		else
			continue
		fi
		got=$(grep -E "^$name=" "$linux/.config" | cut -d= -f2- || true)
		[[ -n $got ]] || got=n
		[[ $got == "$want" ]] || bad+=("$name=$got (wanted $want)")
	done <"$fragment"
	((${#bad[@]} == 0)) ||
		die "the configuration lost options of $fragment: ${bad[*]}; check their dependencies with 'make -C $linux menuconfig' (search with /)"
	log "configured: every option of rpal.config is set"
}

# --- 5. kernel -----------------------------------------------------------------------------------
build_kernel() {
	run make -C "$linux" ARCH=x86_64 -j"$jobs" bzImage modules ||
		die "the kernel build failed (output above); rerun with --jobs 1 to see the first error clearly"
	run cp "$linux/arch/x86/boot/bzImage" "$out/bzImage"
	run cp "$linux/.config" "$out/config"
	run cp "$linux/System.map" "$out/System.map"
	if ((make_deb)); then
		run make -C "$linux" ARCH=x86_64 -j"$jobs" bindeb-pkg || die "make bindeb-pkg failed (output above)"
		((dry_run)) || cp "$linux"/../linux-image-*.deb "$linux"/../linux-headers-*.deb "$out/"
	fi
}

# --- 6. librpal ----------------------------------------------------------------------------------
build_librpal() {
	local dir=$linux/samples/rpal/librpal
	((dry_run)) || [[ -d $dir ]] || die "$dir is missing: the series did not apply completely"
	# The library and samples include the series' uapi headers (linux/rpal.h and friends).
	run make -s -C "$linux" ARCH=x86_64 headers_install || die "make headers_install failed (output above)"
	if [[ -f $dir/Makefile ]]; then
		run make -C "$dir" -j"$jobs" || die "building librpal with its Makefile failed (output above)"
		((dry_run)) || {
			local so
			so=$(find "$dir" -maxdepth 2 -name 'librpal*.so*' -type f | head -n1)
			[[ -n $so ]] || die "librpal's Makefile ran but produced no librpal*.so in $dir"
			cp "$so" "$out/librpal.so"
		}
	else
		# No Makefile: compile the C and assembly sources of the library into one shared object.
		# shellcheck disable=SC2016 # expanded by the inner bash, in the library's directory
		run bash -c 'cd "$1" && gcc -O2 -fPIC -shared -Wall -I. -I"$2/usr/include" -o "$3" ./*.c $(ls ./*.S 2>/dev/null) -lpthread' \
			_ "$dir" "$linux" "$out/librpal.so" ||
			die "compiling $dir into librpal.so failed (output above)"
	fi
	# The sample client and server are the quickest end-to-end check on an RPAL machine.
	if [[ -f $linux/samples/rpal/Makefile ]]; then
		run make -C "$linux/samples/rpal" -j"$jobs" || log "warning: the sample client/server did not build; librpal.so is fine"
	fi
	((dry_run)) || log "librpal: $out/librpal.so"
}

fetch_series
fetch_kernel
apply_series
build_librpal
if ((dry_run)); then
	((librpal_only)) || {
		configure
		build_kernel
	}
	log "dry run: nothing was downloaded, installed or changed; the commands above are what a real run executes"
	exit 0
fi
if ((librpal_only)); then
	log "done (--librpal-only): $out/librpal.so"
	exit 0
fi
configure
build_kernel

cat >&2 <<EOF
build-kernel: done. In $out:
  bzImage, config, System.map, librpal.so$( ((make_deb)) && printf ', linux-image/headers .deb')

Try it in a VM first (no reboot of this machine):
  kernel-patches/vm/run --kernel $out/bzImage --rootfs debian --copy $out/librpal.so \\
    --env MESH_LIBRPAL=$out/librpal.so -- bun run mesh doctor

Install on this machine (x86-64 with PKU and FSGSBASE: grep -ow 'pku\\|fsgsbase' /proc/cpuinfo):
  $( ((make_deb)) && printf 'sudo dpkg -i %s/linux-image-*.deb' "$out" || printf 'sudo make -C %s modules_install install' "$linux")
  sudo install -m 0644 $out/librpal.so /usr/local/lib/ && sudo ldconfig
then reboot into it and check with: bun run mesh doctor
EOF

//! `test-gpu --bundle DIR`: release test and bench executables, `kernels-ptx/`, fixtures and a
//! `run.sh` for a GPU machine with no Rust toolchain.

use std::path::Path;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// Largest bundle archive we allow ourselves (the device tool carries 64 MiB in all; the unpacked
/// folder, every executable embedding every arch's PTX, is several times larger).
const MAX_BUNDLE_BYTES: u64 = 60_000_000;

/// The archive's compressor: xz with a 256 MiB dictionary (about 2.7 GiB to compress, 256 MiB to
/// decompress).
const XZ_BIG_DICT: &str = "xz -T1 --lzma2=preset=6,dict=256MiB";

/// Release executables of one cargo invocation: (name, path), for the given target kinds.
fn executables(sh: &Shell, args: &[&str], kinds: &[&str]) -> Result<Vec<(String, String)>> {
    let out = cmd!(
        sh,
        "cargo {args...} --message-format=json-render-diagnostics"
    )
    .read()?;
    let mut found = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let kind = v["target"]["kind"][0].as_str().unwrap_or("");
        if !kinds.contains(&kind) {
            continue;
        }
        let pkg = v["package_id"].as_str().unwrap_or("");
        if pkg.contains("xtask") {
            continue;
        }
        let name = v["target"]["name"].as_str().unwrap_or("exe").to_string();
        let krate = v["manifest_path"]
            .as_str()
            .and_then(|m| {
                Path::new(m)
                    .parent()?
                    .file_name()?
                    .to_str()
                    .map(String::from)
            })
            .unwrap_or_default();
        found.push((format!("{krate}.{kind}.{name}"), exe.to_string()));
    }
    Ok(found)
}

/// Builds the bundle into `dir`.
pub fn build(sh: &Shell, dir: &Path) -> Result<()> {
    let root = crate::project_root();
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        root.join(dir)
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tests"))?;
    std::fs::create_dir_all(dir.join("benches"))?;
    std::fs::create_dir_all(dir.join("bin"))?;

    // Integration tests and library unit tests that hold GPU (ignored) tests.
    let tests = executables(
        sh,
        &["test", "--workspace", "--release", "--tests", "--no-run"],
        &["test", "lib"],
    )?;
    let benches = executables(sh, &["bench", "--workspace", "--no-run"], &["bench"])?;
    let bins = executables(
        sh,
        &["build", "--workspace", "--release", "--bins"],
        &["bin"],
    )?;
    // Only executables that hold GPU (ignored) tests are worth carrying to the GPU machine.
    let tests: Vec<(String, String)> = tests
        .into_iter()
        .filter(|(_, exe)| {
            cmd!(sh, "{exe} --list --ignored --format terse")
                .quiet()
                .read()
                .is_ok_and(|out| out.lines().any(|l| l.ends_with(": test")))
        })
        .collect();
    for (sub, list) in [("tests", &tests), ("benches", &benches)] {
        for (name, exe) in list.iter() {
            std::fs::copy(exe, dir.join(sub).join(name)).with_context(|| format!("copy {exe}"))?;
        }
    }
    for (name, exe) in &bins {
        let short = name.rsplit('.').next().unwrap_or(name);
        std::fs::copy(exe, dir.join("bin").join(short))?;
    }
    // The plain PTX (for run.sh's ptxas check of targets the device can't run), inflated from
    // the committed .ptx.z files, travels as one xz archive.
    let plain = dir.join("ptx-plain");
    crate::ptx::unpack(&root.join("kernels-ptx"), &plain.join("kernels-ptx"))?;
    cmd!(
        sh,
        "tar -C {plain} -cJf {dir}/kernels-ptx.tar.xz kernels-ptx"
    )
    .run()?;
    std::fs::remove_dir_all(&plain)?;
    for extra in ["fixtures", "scripts"] {
        if root.join(extra).exists() {
            cmd!(sh, "cp -r {root}/{extra} {dir}/{extra}").run()?;
        }
    }
    std::fs::write(dir.join("run.sh"), run_sh())?;
    cmd!(sh, "chmod +x {dir}/run.sh").run()?;
    let size: u64 = cmd!(sh, "du -sb {dir}")
        .read()?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()?;
    eprintln!(
        "bundle: {} tests, {} benches, {} bins, {:.1} MB in {}",
        tests.len(),
        benches.len(),
        bins.len(),
        size as f64 / 1e6,
        dir.display()
    );
    // One archive for transport: the device tool carries at most 64 MiB with the working tree.
    let parent = dir.parent().context("bundle dir has a parent")?;
    let name = dir.file_name().context("bundle dir has a name")?;
    let archive = parent.join(format!("{}.tar.xz", name.to_string_lossy()));
    // Every executable that links a kernel crate embeds every arch's deflated PTX (the same
    // megabytes several times over, which xz cannot compress but can match): a dictionary larger
    // than the whole folder lets it store each copy once. `tar -xJf` reads it as usual.
    cmd!(sh, "tar -C {parent} -I {XZ_BIG_DICT} -cf {archive} {name}").run()?;
    let packed = std::fs::metadata(&archive)?.len();
    // The limit is on what travels: the archive (the device tool carries 64 MiB in all).
    if packed > MAX_BUNDLE_BYTES {
        bail!("bundle archive is {packed} bytes, over the 60 MB limit");
    }
    eprintln!(
        "bundle archive: {:.1} MB in {} (on the GPU machine: tar -xJf it, then bash {}/run.sh)",
        packed as f64 / 1e6,
        archive.display(),
        name.to_string_lossy()
    );
    Ok(())
}

/// `RUN_SH` with the target list of `qmoe_ptx_build::ARCHES` filled in.
fn run_sh() -> String {
    let names: Vec<&str> = qmoe_ptx_build::ARCHES.iter().map(|a| a.name).collect();
    RUN_SH
        .replace("@ARCHES@", &names.join(" "))
        .replace("@ARCH_ALTS@", &names.join("|"))
}

/// The bundle's driver. Runs every test executable's ignored (GPU) tests per arch, or checks
/// with ptxas where the device cannot run the arch, and ends with one summary table.
const RUN_SH: &str = r#"#!/usr/bin/env bash
# qmoe GPU bundle: run on a GPU machine with no Rust toolchain.
#   bash run.sh [--arch @ARCH_ALTS@|all] [--sanitize | --tool memcheck|racecheck] [--bench]
#               [--filter SUBSTR] [--skip TEST_SUBSTR]... [--timeout SECS]
# --filter keeps the executables whose name contains SUBSTR; --skip is passed to each test
# executable (libtest --skip: e.g. --skip heavy leaves out the 48-layer tests, slow under a
# sanitizer); --timeout bounds each executable's run (a suite cut short counts as failed).
# Exit status: 0 when every suite passed, 1 otherwise.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ARCH=all; SANITIZE=0; TOOLS="memcheck racecheck"; BENCH=0; FILTER=""; SKIPS=(); LIMIT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=$2; shift 2;;
    --sanitize) SANITIZE=1; shift;;
    --tool) SANITIZE=1; TOOLS=$2; shift 2;;
    --bench) BENCH=1; shift;;
    --filter) FILTER=$2; shift 2;;
    --skip) SKIPS+=(--skip "$2"); shift 2;;
    --timeout) LIMIT=$2; shift 2;;
    -h|--help) sed -n 2,8p "$0"; exit 0;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2;;
  esac
done
case "$TOOLS" in memcheck|racecheck|"memcheck racecheck") ;; *) echo "run.sh: --tool is memcheck or racecheck" >&2; exit 2;; esac
TO=(); [ -n "$LIMIT" ] && TO=(timeout "$LIMIT")
[ "$ARCH" = all ] && ARCHS="@ARCHES@" || ARCHS=$ARCH
export QMOE_REQUIRE_GPU=1 QMOE_FIXTURES="$HERE/fixtures" QMOE_BIN="$HERE/bin/qmoe"
LOGS=${OUT:-$HERE}/logs; mkdir -p "$LOGS"
CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "device: ${NAME:-none} (cc ${CC:-?})"
PTXAS=$(command -v ptxas || ls /usr/local/cuda/bin/ptxas 2>/dev/null)
PTXDIR=$(mktemp -d); tar -C "$PTXDIR" -xJf "$HERE/kernels-ptx.tar.xz"
ROWS=(); FAIL=0
row() { ROWS+=("$(printf '%-44s %-7s %-17s %6s %6s %7s %8s' "$@")"); }
for arch in $ARCHS; do
  need=${arch#sm_}
  if [ -z "$CC" ] || [ "$need" -gt "$CC" ]; then
    ok=0; bad=0
    for p in "$PTXDIR"/kernels-ptx/$arch/*.ptx; do
      if "$PTXAS" -arch=$arch -o /dev/null "$p" >>"$LOGS/ptxas-$arch.log" 2>&1; then ok=$((ok+1)); else bad=$((bad+1)); FAIL=1; fi
    done
    echo "$arch: runtime tests NOT executed (device cc ${CC:-none} < ${need}); ptxas check: $ok assembled, $bad failed"
    row "ptxas (runtime not executed)" "$arch" "ptxas" "$ok" "$bad" "-" "-"
    continue
  fi
  tools="plain"; [ $SANITIZE = 1 ] && tools=$TOOLS
  for tool in $tools; do
    for exe in "$HERE"/tests/*; do
      name=$(basename "$exe")
      [ -n "$FILTER" ] && [[ "$name" != *"$FILTER"* ]] && continue
      log="$LOGS/$name.$arch.$tool.log"
      start=$(date +%s%N)
      if [ $tool = plain ]; then
        QMOE_PTX_ARCH=$arch "${TO[@]}" "$exe" --ignored --test-threads=1 "${SKIPS[@]}" >"$log" 2>&1; rc=$?
      else
        QMOE_PTX_ARCH=$arch "${TO[@]}" compute-sanitizer --tool $tool --error-exitcode 99 "$exe" --ignored --test-threads=1 "${SKIPS[@]}" >"$log" 2>&1; rc=$?
      fi
      [ $rc -eq 124 ] && echo "$name ($arch $tool): cut short by --timeout $LIMIT s" >>"$log"
      ms=$(( ($(date +%s%N) - start) / 1000000 )); secs="$((ms / 1000)).$(( (ms % 1000) / 100 ))"
      res=$(grep -E '^test result:' "$log" | tail -1)
      p=$(echo "$res" | sed -nE 's/.* ([0-9]+) passed.*/\1/p'); f=$(echo "$res" | sed -nE 's/.* ([0-9]+) failed.*/\1/p')
      i=$(echo "$res" | sed -nE 's/.* ([0-9]+) ignored.*/\1/p')
      [ $rc -ne 0 ] && FAIL=1 && { echo "---- FAILED: $name ($arch $tool), tail of $log:"; tail -40 "$log"; }
      label=$tool; [ $rc -eq 124 ] && label="$tool(timeout)"
      row "$name" "$arch" "$label" "${p:-0}" "${f:-?}" "${i:-0}" "$secs"
    done
  done
done
if [ $BENCH = 1 ]; then
  for exe in "$HERE"/benches/*; do
    name=$(basename "$exe")
    [ -n "$FILTER" ] && [[ "$name" != *"$FILTER"* ]] && continue
    echo "==== bench $name"
    "$exe" --bench --noplot 2>&1 | tee "$LOGS/$name.bench.log" | grep -E 'time:|thrpt:|^[a-z].*/' || true
  done
fi
echo
echo "summary"
printf '%-44s %-7s %-17s %6s %6s %7s %8s\n' executable arch tool passed failed ignored seconds
for r in "${ROWS[@]}"; do echo "$r"; done
exit $FAIL
"#;

#[cfg(test)]
mod tests {
    use super::run_sh;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;

    fn script(path: &Path, body: &str) {
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs run.sh in a fake bundle: a stand-in nvidia-smi reporting cc 9.0, a stand-in
    /// compute-sanitizer and ptxas, and one "test executable" that logs its arguments.
    fn run(dir: &Path, args: &[&str], slow: bool) -> (i32, String, String) {
        let out = Command::new("bash")
            .arg(dir.join("run.sh"))
            .args(args)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    dir.join("bin").display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .env("OUT", dir.join("out"))
            .env("SLOW", if slow { "1" } else { "" })
            .output()
            .unwrap();
        let log = std::fs::read_to_string(dir.join("out/logs/fake.test.sm_90.racecheck.log"))
            .or_else(|_| std::fs::read_to_string(dir.join("out/logs/fake.test.sm_90.plain.log")))
            .unwrap_or_default();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            log,
        )
    }

    #[test]
    fn run_sh_forwards_skips_picks_one_tool_and_reports_timeouts() {
        let dir = std::env::temp_dir().join(format!("qmoe-run-sh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["tests", "benches", "bin", "ptx/kernels-ptx/sm_120"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("run.sh"), run_sh()).unwrap();
        std::fs::write(dir.join("ptx/kernels-ptx/sm_120/a.ptx"), "x").unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(dir.join("ptx"))
            .arg("-cJf")
            .arg(dir.join("kernels-ptx.tar.xz"))
            .arg("kernels-ptx")
            .status()
            .unwrap();
        assert!(tar.success());
        script(
            &dir.join("tests/fake.test"),
            "#!/bin/bash\necho \"args: $*\"\n[ -n \"$SLOW\" ] && sleep 5\n\
             echo 'test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out'\n",
        );
        script(
            &dir.join("bin/nvidia-smi"),
            "#!/bin/bash\ncase \"$*\" in *compute_cap*) echo 9.0;; *name*) echo Fake;; esac\n",
        );
        script(
            &dir.join("bin/compute-sanitizer"),
            "#!/bin/bash\necho \"sanitizer $2\"\nshift 4\nexec \"$@\"\n",
        );
        script(&dir.join("bin/ptxas"), "#!/bin/bash\nexit 0\n");

        let (rc, stdout, log) = run(
            &dir,
            &["--arch", "sm_90", "--tool", "racecheck", "--skip", "heavy"],
            false,
        );
        assert_eq!(rc, 0, "{stdout}");
        assert!(log.contains("sanitizer racecheck"), "{log}");
        assert!(
            log.contains("args: --ignored --test-threads=1 --skip heavy"),
            "{log}"
        );
        assert!(
            !stdout.contains("memcheck"),
            "only the chosen tool runs: {stdout}"
        );
        assert!(
            stdout.contains("fake.test") && stdout.contains(" 2 "),
            "{stdout}"
        );

        let (rc, stdout, _) = run(&dir, &["--arch", "sm_90", "--timeout", "1"], true);
        assert_eq!(rc, 1, "a suite cut short fails the run: {stdout}");
        assert!(stdout.contains("plain(timeout)"), "{stdout}");

        let (rc, _, _) = run(&dir, &["--tool", "bogus"], false);
        assert_eq!(rc, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! `cargo xtask`: the single entry point for tests, benchmarks and project checks.
//!
//! ```text
//! cargo xtask test                  all tests (makes sure a software Vulkan adapter exists)
//! cargo xtask bench [--backend vulkan|metal|dx12|gl] [--filter NAME] [--quick]
//! cargo xtask list                  one line per registered loss: name, family, anchor
//! cargo xtask validate-shaders      naga validation of every composed shader (no adapter)
//! ```

use std::path::Path;
use std::process::{exit, Command};

const HINT: &str =
    "no Vulkan driver found: install one with `apt-get install -y mesa-vulkan-drivers` \
(Debian/Ubuntu; Mesa's software adapter lavapipe), then run `cargo xtask test` again";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match cmd {
        "test" => {
            ensure_adapter().and_then(|()| cargo(&["test", "--release", "--workspace"], rest, &[]))
        }
        "bench" => bench(rest),
        "list" => cargo(
            &[
                "run",
                "--release",
                "--quiet",
                "--bin",
                "wgloss-bench",
                "--",
                "list",
            ],
            rest,
            &[],
        ),
        "validate-shaders" => cargo(
            &["test", "--release", "-p", "wgloss", "--lib", "kernel::"],
            rest,
            &[],
        ),
        _ => {
            eprintln!("usage: cargo xtask <test | bench [--backend B] [--filter NAME] [--quick] | list | validate-shaders>");
            exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        exit(1);
    }
}

fn bench(args: &[String]) -> Result<(), String> {
    let mut env = Vec::new();
    let mut pass = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--backend" {
            let b = it.next().ok_or("--backend needs a value")?;
            env.push(("WGPU_BACKEND".to_string(), b.clone()));
            pass.push(a.clone());
            pass.push(b.clone());
        } else {
            pass.push(a.clone());
        }
    }
    if env.iter().all(|(_, b)| b == "vulkan") {
        ensure_adapter()?;
    }
    cargo(
        &["run", "--release", "--bin", "wgloss-bench", "--", "bench"],
        &pass,
        &env,
    )
}

fn cargo(args: &[&str], extra: &[String], env: &[(String, String)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Whether a Vulkan driver manifest is installed (or the environment points at one).
fn has_vulkan_driver() -> bool {
    if ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return true;
    }
    [
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
        "/usr/local/share/vulkan/icd.d",
    ]
    .iter()
    .any(|d| std::fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some()))
}

/// On Linux, makes sure a Vulkan adapter exists: installs lavapipe when run as root on a
/// Debian-like system, otherwise fails with the one-line install hint. Elsewhere (Metal, DX12)
/// the platform provides the adapter.
fn ensure_adapter() -> Result<(), String> {
    if !cfg!(target_os = "linux") || has_vulkan_driver() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root || !Path::new("/usr/bin/apt-get").exists() {
        return Err(HINT.into());
    }
    eprintln!("xtask: installing Mesa's software Vulkan adapter (lavapipe)");
    let ok = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&["update", "-q"])
        && ok(&["install", "-y", "-q", "mesa-vulkan-drivers"])
        && has_vulkan_driver()
    {
        Ok(())
    } else {
        Err(HINT.into())
    }
}

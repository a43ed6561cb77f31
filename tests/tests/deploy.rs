//! The deployment files, checked offline as a user's CI would before
//! applying them: every kustomize overlay builds (`kubectl kustomize`),
//! every object validates strictly against the Kubernetes 1.31 OpenAPI
//! schemas (`kubernetes-validate` from PyPI, in the venv `./x setup`
//! makes), the configs the ConfigMaps carry pass the daemons' own
//! `--check-config`, and the wiring between objects holds (Secrets the pods
//! mount exist in each overlay, probes hit the health ports the configs
//! open, the coordinator's RBAC only reads). No cluster runs here.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use faultd_tests::{certs::DevCa, cgroup::skip};
use serde_norway::Value;

const K8S_VERSION: &str = "1.31.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validator() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let cache =
        std::env::var_os("FAULTD_CACHE").map_or_else(|| home.join(".cache/faultd"), PathBuf::from);
    let bin = cache.join("venv/bin/kubernetes-validate");
    bin.is_file().then_some(bin)
}

fn tools() -> Option<PathBuf> {
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !kubectl {
        skip("no kubectl (`./x setup` installs it)");
        return None;
    }
    let Some(v) = validator() else {
        skip("no kubernetes-validate in the cache's venv (`./x setup` makes it)");
        return None;
    };
    Some(v)
}

fn kustomize(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Strict validation; returns the warnings (kinds without a schema).
fn validate(validator: &Path, name: &str, yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join(format!("{}.yaml", name.replace('/', "-")));
    std::fs::write(&file, yaml).expect("rendered manifests");
    let out = Command::new(validator)
        .args(["--strict", "-k", K8S_VERSION])
        .arg(&file)
        .output()
        .expect("kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name}: kubernetes-validate:\n{text}");
    let passed = text.lines().filter(|l| l.contains(" passed ")).count();
    println!("{name}: {passed} objects valid against Kubernetes {K8S_VERSION}");
    text.lines()
        .filter(|l| l.starts_with("WARN"))
        .map(str::to_owned)
        .collect()
}

fn objects(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML object"))
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{kind}/{name} in the manifests"))
}

/// A copy of deploy/kubernetes whose secrets overlay has certificates.
fn with_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let copy = dir.path().join("kubernetes");
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy/kubernetes"))
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let certs = copy.join("overlays/secrets/certs");
    let made = dir.path().join("made");
    std::fs::create_dir(&made).expect("mkdir");
    let ca = DevCa::new(&made, "faultd");
    let agent = ca.issue("agent", &["faultd-agent.faultd.svc"]);
    let coordinator = ca.issue(
        "coordinator",
        &["faultd-coordinator.faultd.svc", "coordinator.faultd"],
    );
    let put = |from: &Path, to: &str| std::fs::copy(from, certs.join(to)).expect("cert");
    put(ca.ca_pem(), "ca.pem");
    put(&agent.cert, "agent.pem");
    put(&agent.key, "agent.key");
    put(&coordinator.cert, "coordinator.pem");
    put(&coordinator.key, "coordinator.key");
    dir
}

#[test]
fn every_overlay_builds_and_validates() {
    let Some(validator) = tools() else {
        return;
    };
    let tree = with_certs();
    let k8s = tree.path().join("kubernetes");
    let base = kustomize(&k8s.join("base"));
    assert!(validate(&validator, "base", &base).is_empty());

    let secrets = kustomize(&k8s.join("overlays/secrets"));
    assert!(validate(&validator, "overlays/secrets", &secrets).is_empty());
    let objs = objects(&secrets);
    for name in ["faultd-agent-tls", "faultd-coordinator-tls"] {
        let s = find(&objs, "Secret", name);
        assert_eq!(s["type"].as_str(), Some("kubernetes.io/tls"));
        for key in ["tls.crt", "tls.key", "ca.crt"] {
            assert!(
                s["data"][key].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: {key}"
            );
        }
    }

    let cm = kustomize(&k8s.join("overlays/cert-manager"));
    let warnings = validate(&validator, "overlays/cert-manager", &cm);
    // Only cert-manager's own kinds have no schema in Kubernetes's: checked
    // here by hand instead.
    assert!(
        warnings.iter().all(|w| w.contains("cert-manager.io/v1")),
        "{warnings:#?}"
    );
    let objs = objects(&cm);
    let issued: BTreeSet<&str> = objs
        .iter()
        .filter(|o| o["kind"].as_str() == Some("Certificate"))
        .map(|c| {
            let spec = &c["spec"];
            assert!(spec["issuerRef"]["name"].as_str().is_some(), "{c:?}");
            spec["secretName"].as_str().expect("secretName")
        })
        .collect();
    for name in ["faultd-agent-tls", "faultd-coordinator-tls"] {
        assert!(
            issued.contains(name),
            "cert-manager issues {name}: {issued:?}"
        );
    }
}

#[test]
fn a_broken_manifest_is_caught() {
    let Some(validator) = tools() else {
        return;
    };
    let base = kustomize(&repo().join("deploy/kubernetes/base"));
    let broken = base.replacen("containerPort: 7443", "containerPort: \"7443/tcp\"", 1);
    assert_ne!(broken, base);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, broken).expect("write");
    let out = Command::new(&validator)
        .args(["--strict", "-k", K8S_VERSION])
        .arg(&file)
        .output()
        .expect("kubernetes-validate");
    assert!(!out.status.success(), "a string port must not validate");
}

/// The wiring: what the pods mount, probe and are allowed to do.
#[test]
fn the_manifests_fit_together() {
    if tools().is_none() {
        return;
    }
    let base = kustomize(&repo().join("deploy/kubernetes/base"));
    let objs = objects(&base);
    let agent = find(&objs, "DaemonSet", "faultd-agent");
    let coordinator = find(&objs, "Deployment", "faultd-coordinator");
    for (what, workload, health, config_key) in [
        ("agent", agent, 7444, "faultd.toml"),
        ("coordinator", coordinator, 7401, "coordinator.toml"),
    ] {
        let pod = &workload["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                container[probe]["grpc"]["port"].as_u64(),
                Some(health),
                "{what}: {probe} on the health port"
            );
        }
        let cm = find(&objs, "ConfigMap", &format!("faultd-{what}-config"));
        let toml = cm["data"][config_key].as_str().expect("config");
        assert!(
            toml.contains(&format!(":{health}\"")),
            "{what}: health_listen {health}"
        );
        let secret = pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find_map(|v| v["secret"]["secretName"].as_str())
            .expect("a TLS secret volume");
        assert_eq!(secret, format!("faultd-{what}-tls"));
    }
    // The discovery finds the agents by the DaemonSet's labels.
    let labels = &agent["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        labels["app.kubernetes.io/name"].as_str(),
        Some("faultd-agent")
    );
    // The agent's token is not mounted; the coordinator's role only reads.
    assert_eq!(
        agent["spec"]["template"]["spec"]["automountServiceAccountToken"].as_bool(),
        Some(false)
    );
    let role = find(&objs, "ClusterRole", "faultd-coordinator");
    for rule in role["rules"].as_sequence().expect("rules") {
        for verb in rule["verbs"].as_sequence().expect("verbs") {
            assert!(
                matches!(verb.as_str(), Some("get" | "list" | "watch")),
                "the coordinator only reads: {verb:?}"
            );
        }
    }
    // Only the coordinator reaches the agents' API port.
    let policy = find(&objs, "NetworkPolicy", "faultd-agent");
    let api = policy["spec"]["ingress"]
        .as_sequence()
        .expect("ingress")
        .iter()
        .find(|r| r["ports"][0]["port"].as_u64() == Some(7443))
        .expect("a rule for 7443");
    assert_eq!(
        api["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        Some("faultd-coordinator")
    );
}

/// The configs in the ConfigMaps are valid for the daemons themselves.
#[test]
fn the_shipped_configs_pass_the_daemons_checks() {
    if tools().is_none() {
        return;
    }
    let base = kustomize(&repo().join("deploy/kubernetes/base"));
    let objs = objects(&base);
    let dir = tempfile::tempdir().expect("tmp");
    let data = |cm: &str, key: &str| {
        find(&objs, "ConfigMap", cm)["data"][key]
            .as_str()
            .expect("config text")
            .to_owned()
    };
    let agent = dir.path().join("faultd.toml");
    std::fs::write(&agent, data("faultd-agent-config", "faultd.toml")).expect("write");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, data("faultd-coordinator-config", "policy.toml")).expect("write");
    let coordinator = dir.path().join("coordinator.toml");
    std::fs::write(
        &coordinator,
        data("faultd-coordinator-config", "coordinator.toml")
            .replace("/etc/faultd/policy.toml", &policy.display().to_string()),
    )
    .expect("write");
    for (bin, config) in [
        (faultd_tests::faultd_bin(), &agent),
        (faultd_tests::lab::coordinator_bin(), &coordinator),
    ] {
        let out = Command::new(&bin)
            .arg("--config")
            .arg(config)
            .arg("--check-config")
            .output()
            .expect("--check-config");
        assert!(
            out.status.success(),
            "{} --check-config {}: {}",
            bin.display(),
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// The container image: built with buildah from this build (the
/// Containerfile's base images need a registry this machine cannot reach),
/// then its binaries run inside it: the agent as root, the coordinator as
/// the image's default unprivileged user; no shell in it.
#[test]
fn the_image_builds_and_its_binaries_run() {
    use faultd_tests::require_root;
    if !require_root() {
        return;
    }
    if Command::new("buildah").arg("--version").output().is_err() {
        skip("no buildah (`./x setup` installs it)");
        return;
    }
    let xtask = faultd_tests::target_sibling("xtask").expect("the xtask binary (cargo build)");
    let bin_dir = faultd_tests::faultd_bin()
        .parent()
        .expect("bin dir")
        .to_owned();
    let tag = format!("localhost/faultd:test-{}", std::process::id());
    let out = Command::new(&xtask)
        .args(["image", "--tag", &tag, "--bin-dir"])
        .arg(&bin_dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("xtask image");
    assert!(
        out.status.success(),
        "xtask image: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let buildah = |args: &[&str]| {
        let out = Command::new("buildah")
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("BUILDAH_ISOLATION", "chroot")
            .output()
            .expect("buildah");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, user) = buildah(&["inspect", "--format", "{{.OCIv1.Config.User}}", &tag]);
    assert!(ok, "{user}");
    assert_eq!(user.trim(), "65532:65532", "non-root by default");
    let (ok, container) = buildah(&["from", &tag]);
    assert!(ok, "{container}");
    let container = container.trim().to_owned();
    let (agent_ok, agent) = buildah(&[
        "run",
        "--user",
        "0",
        &container,
        "--",
        "/usr/local/bin/faultd",
        "--check-config",
    ]);
    let (coordinator_ok, coordinator) = buildah(&[
        "run",
        &container,
        "--",
        "/usr/local/bin/faultd-coordinator",
        "--version",
    ]);
    let (shell, _) = buildah(&["run", &container, "--", "/bin/sh", "-c", "true"]);
    let (_, size) = buildah(&["images", "--format", "{{.Size}}", &tag]);
    buildah(&["rm", &container]);
    buildah(&["rmi", &tag]);
    assert!(agent_ok && agent.contains("valid"), "{agent}");
    assert!(
        coordinator_ok && coordinator.contains("faultd-coordinator"),
        "{coordinator}"
    );
    assert!(!shell, "the runtime image has no shell");
    println!(
        "image {tag}: {} ; agent: {} ; coordinator: {}",
        size.trim(),
        agent.trim(),
        coordinator.trim()
    );
}

//! The OCI image layouts `./dev image` writes (`FLEDGE_OCI_DIR`, `target/oci` under `./dev
//! test`) are what a registry and a cluster take: every blob's digest and size are the ones its
//! referrers state, skopeo reads both images, the agent image runs its static binary as user
//! 65532 with the OCI labels, and the filter image is the Wasm image spec's compat variant (one
//! tar+gzip layer holding `plugin.wasm`) whose module is byte-identical to the `.wasm` the tests
//! run (`FLEDGE_FILTER_WASM`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const ENV: &str = "FLEDGE_OCI_DIR";

fn layouts() -> PathBuf {
    match std::env::var_os(ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "{ENV} is not set: run the tests through `./dev test`, which builds the images, \
             or run `./dev image` and set {ENV} to target/oci"
        ),
    }
}

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (./dev test installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256_of(path: &Path) -> String {
    let out = run("sha256sum", &[path.to_str().unwrap()]);
    let text = String::from_utf8(out).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

fn json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// A blob of `layout` named by `descriptor`, checked against the digest and size it states.
fn blob(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().expect("a digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    assert_eq!(sha256_of(&path), digest, "{path:?}");
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(Some(size), descriptor["size"].as_u64(), "{path:?}");
    path
}

/// One image of a layout, every blob checked.
struct Image {
    layout: PathBuf,
    tag: String,
    manifest_digest: String,
    manifest: Value,
    config: Value,
    /// The one layer, a tar+gzip file.
    layer: PathBuf,
}

fn image(name: &str) -> Image {
    let layout = layouts().join(name);
    assert_eq!(
        json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = json(&layout.join("index.json"));
    let [entry] = index["manifests"].as_array().unwrap().as_slice() else {
        panic!("{name}: one image per layout")
    };
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let tag = entry["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "{name}: tagged with the version"
    );
    let manifest = json(&blob(&layout, entry));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = json(&blob(&layout, &manifest["config"]));
    let [layer] = manifest["layers"].as_array().unwrap().as_slice() else {
        panic!("{name}: one layer")
    };
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = blob(&layout, layer);
    // The config names the layer by the digest of its uncompressed tar.
    let tar = std::env::temp_dir().join(format!("fledge-images-{}-{name}.tar", std::process::id()));
    std::fs::write(&tar, run("gzip", &["-dc", layer.to_str().unwrap()])).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256_of(&tar), "{name}");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    std::fs::remove_file(&tar).ok();
    Image {
        manifest_digest: entry["digest"].as_str().unwrap().to_owned(),
        layout,
        tag,
        manifest,
        config,
        layer,
    }
}

/// `skopeo inspect` of the image, as a registry client sees it.
fn skopeo(image: &Image, config: bool) -> Value {
    let reference = format!("oci:{}:{}", image.layout.display(), image.tag);
    let mut args = vec!["inspect"];
    if config {
        args.push("--config");
    }
    args.push(&reference);
    serde_json::from_slice(&run("skopeo", &args)).unwrap()
}

/// Unpacks `image`'s layer into a fresh folder.
fn unpack(image: &Image, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fledge-images-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    run(
        "tar",
        &[
            "-xzf",
            image.layer.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
        ],
    );
    dir
}

fn labels_are_set(labels: &Value, name: &str) {
    for label in [
        "source", "version", "revision", "licenses", "created", "title",
    ] {
        let value = labels[format!("org.opencontainers.image.{label}")].as_str();
        assert!(
            value.is_some_and(|v| !v.is_empty()),
            "{name}: label {label}: {labels}"
        );
    }
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/fledge-dev/fledge"
    );
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn wants_a_loader(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn the_agent_image_runs_the_static_agent_as_a_non_root_user() {
    let image = image("fledge-agent");
    let config = &image.config["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/fledge-agent"]));
    assert_eq!(image.config["os"], "linux");
    assert_eq!(image.config["architecture"], "amd64");
    labels_are_set(&config["Labels"], "fledge-agent config");
    labels_are_set(&image.manifest["annotations"], "fledge-agent manifest");

    // skopeo reads it as a registry would serve it.
    let inspected = skopeo(&image, false);
    assert_eq!(inspected["Digest"], image.manifest_digest.as_str());
    assert_eq!(inspected["Os"], "linux");
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 1);
    labels_are_set(&inspected["Labels"], "skopeo inspect");
    assert_eq!(skopeo(&image, true)["config"]["User"], "65532:65532");

    // An empty base: the binary and the user's name, nothing else; the binary is static and runs.
    let root = unpack(&image, "agent");
    let mut files: Vec<String> = run("find", &[root.to_str().unwrap(), "-type", "f"])
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let path = PathBuf::from(String::from_utf8_lossy(l).into_owned());
            path.strip_prefix(&root).unwrap().display().to_string()
        })
        .collect();
    files.sort();
    assert_eq!(files, ["etc/group", "etc/passwd", "fledge-agent"]);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");
    let binary = root.join("fledge-agent");
    assert!(
        !wants_a_loader(&std::fs::read(&binary).unwrap()),
        "the agent is linked statically"
    );
    let version = String::from_utf8(run(binary.to_str().unwrap(), &["--version"])).unwrap();
    assert_eq!(
        version.trim(),
        format!("fledge-agent {}", env!("CARGO_PKG_VERSION"))
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn the_filter_image_holds_the_module_the_tests_run() {
    let image = image("fledge-filter");
    assert_eq!(
        image.manifest["annotations"]["module.wasm.image/variant"],
        "compat"
    );
    labels_are_set(&image.manifest["annotations"], "fledge-filter manifest");
    let inspected = skopeo(&image, false);
    assert_eq!(inspected["Digest"], image.manifest_digest.as_str());
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 1);

    let root = unpack(&image, "filter");
    let entries: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["plugin.wasm"], "Istio looks for plugin.wasm");
    let module = std::fs::read(root.join("plugin.wasm")).unwrap();
    let built = std::env::var_os("FLEDGE_FILTER_WASM")
        .map(PathBuf::from)
        .expect("FLEDGE_FILTER_WASM (./dev test sets it)");
    let built = std::fs::read(&built).unwrap_or_else(|e| panic!("{built:?}: {e}"));
    assert!(
        module == built,
        "the image's plugin.wasm differs from FLEDGE_FILTER_WASM: run ./dev image"
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_noticed() {
    let image = image("fledge-filter");
    let copy = std::env::temp_dir().join(format!("fledge-images-{}-copy", std::process::id()));
    std::fs::remove_dir_all(&copy).ok();
    run(
        "cp",
        &["-r", image.layout.to_str().unwrap(), copy.to_str().unwrap()],
    );
    let layer = copy
        .join("blobs/sha256")
        .join(image.layer.file_name().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    let descriptor = &image.manifest["layers"][0];
    let caught = std::panic::catch_unwind(|| blob(&copy, descriptor));
    assert!(caught.is_err(), "a changed blob passed the digest check");
    std::fs::remove_dir_all(&copy).ok();
}

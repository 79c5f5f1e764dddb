//! Configuration resolution, the metrics log and checkpoints.

use genlab::config::{Overrides, RunConfig, resolve};
use genlab::device::DeviceKind;
use genlab::presets::Preset;
use genlab::run::{Checkpoint, RunDir, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToyConfig {
    hidden: usize,
    lr: f64,
    epochs: usize,
    schedule: String,
}

impl Default for ToyConfig {
    fn default() -> Self {
        ToyConfig {
            hidden: 500,
            lr: 0.1,
            epochs: 30,
            schedule: "constant".into(),
        }
    }
}

const PRESET: Preset = Preset {
    name: "toy-20",
    family: "toy",
    description: "a toy preset",
    toml: "[model]\nhidden = 20\n",
    seed_figure: None,
};

fn write_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("user.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn layers_apply_in_order_defaults_preset_file_flags_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "seed = 5\n[model]\nlr = 0.05\nepochs = 3\n");
    let overrides = Overrides {
        config_file: Some(file),
        set: vec![
            "model.epochs=7".into(),
            "data.train_limit=100".into(),
            "model.schedule=linear".into(),
        ],
    };
    let c: RunConfig<ToyConfig> = resolve(&PRESET, &overrides).unwrap();
    assert_eq!(c.model.hidden, 20); // preset
    assert_eq!(c.model.lr, 0.05); // file
    assert_eq!(c.model.epochs, 7); // --set beats file
    assert_eq!(c.model.schedule, "linear"); // bare word becomes a string
    assert_eq!(c.seed, 5);
    assert_eq!(c.data.train_limit, Some(100));
    assert_eq!(c.device, DeviceKind::Cpu);
    assert_eq!((c.family.as_str(), c.preset.as_str()), ("toy", "toy-20"));
}

#[test]
fn resolved_config_round_trips_through_config_toml() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(&dir.path().join("run")).unwrap();
    let c: RunConfig<ToyConfig> = resolve(&PRESET, &Overrides::default()).unwrap();
    run.write_config(&c).unwrap();
    let back: RunConfig<ToyConfig> = RunDir::open(&run.root).unwrap().read_config().unwrap();
    assert_eq!(back, c);
    assert_eq!(run.family().unwrap(), "toy");
    // Resolving the written file again (as --config) gives the same configuration.
    let again: RunConfig<ToyConfig> = resolve(
        &PRESET,
        &Overrides {
            config_file: Some(run.config_path()),
            set: vec![],
        },
    )
    .unwrap();
    assert_eq!(again, c);
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[model]\nhiden = 3\n", "hiden"),
        ("[model]\nlr = \"fast\"\n", "lr"),
        ("colour = 1\n", "colour"),
        ("[data]\ndataset = \"cifar\"\n", "cifar"),
        ("device = \"tpu\"\n", "tpu"),
    ];
    for (text, key) in cases {
        let file = write_file(dir.path(), text);
        let e = resolve::<ToyConfig>(
            &PRESET,
            &Overrides {
                config_file: Some(file),
                set: vec![],
            },
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        eprintln!("{msg}");
        assert!(msg.contains(key), "'{key}' not named in: {msg}");
        assert!(!msg.contains('\n'), "multi-line: {msg}");
    }
    for (set, key) in [
        ("model.hiden=3", "hiden"),
        ("model.lr=abc", "lr"),
        ("model", "model"),
    ] {
        let e = resolve::<ToyConfig>(
            &PRESET,
            &Overrides {
                config_file: None,
                set: vec![set.into()],
            },
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(key), "'{key}' not named in: {msg}");
    }
    let file = write_file(dir.path(), "family = \"gan\"\n");
    let e = resolve::<ToyConfig>(
        &PRESET,
        &Overrides {
            config_file: Some(file),
            set: vec![],
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("genlab train gan"));
}

#[test]
fn run_dirs_refuse_to_overwrite_and_open_checks_for_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r");
    let run = RunDir::create(&root).unwrap();
    // Not a run yet (no config): opening says so, and creating it again is fine.
    let e = RunDir::open(&root).unwrap_err().to_string();
    assert!(e.contains("is not a genlab run"), "{e}");
    let run = RunDir::create(&run.root).unwrap();
    let c: RunConfig<ToyConfig> = resolve(&PRESET, &Overrides::default()).unwrap();
    run.write_config(&c).unwrap();
    assert!(run.images().is_dir() && run.checkpoints().is_dir());
    let e = RunDir::create(&root).unwrap_err().to_string();
    assert!(
        e.contains("already a genlab run") && e.contains("--out"),
        "{e}"
    );
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "keep").unwrap();
    let e = RunDir::create(&other).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(
        std::fs::read_to_string(other.join("precious.txt")).unwrap(),
        "keep"
    );
    assert!(RunDir::open(&dir.path().join("missing")).is_err());
}

#[test]
fn metrics_log_appends_rows_and_drops_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(&dir.path().join("r")).unwrap();
    let log = run.metrics();
    for e in 1..=3 {
        let row = json!({"epoch": e, "seconds": 1.5, "loss": 10.0 / e as f64});
        log.append(row.as_object().unwrap()).unwrap();
    }
    // A crash in the middle of a write leaves a partial line.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log.path)
        .unwrap();
    f.write_all(b"{\"epoch\": 4, \"los").unwrap();
    drop(f);
    let rows = log.read().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        log.series("loss").unwrap(),
        vec![(1.0, 10.0), (2.0, 5.0), (3.0, 10.0 / 3.0)]
    );
    log.truncate_to_epoch(2).unwrap();
    assert_eq!(log.read().unwrap().len(), 2);
    let text = std::fs::read_to_string(&log.path).unwrap();
    assert!(text.ends_with('\n') && !text.contains("los\""));
}

/// Resume keeps an epoch's partial loss sums as JSON in the checkpoint's
/// metadata; they must come back bit for bit, or a resumed run's epoch loss
/// differs in its last digits from an uninterrupted one.
#[test]
fn partial_sums_survive_a_checkpoint_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latest.safetensors");
    // 57414.518664216484 is one of the values serde_json's default parser
    // reads back one ulp off; the rest are spread over many magnitudes.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut sums = vec![57414.518664216484f64, 78.99677459231218];
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sums.push((x >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((x % 12) as i32));
    }
    let mut ck = Checkpoint::default();
    ck.set_meta("genlab.partial_sums", serde_json::to_string(&sums).unwrap());
    ck.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    let read: Vec<f64> = serde_json::from_str(back.meta("genlab.partial_sums").unwrap()).unwrap();
    for (a, b) in sums.iter().zip(&read) {
        assert_eq!(a.to_bits(), b.to_bits(), "{a} came back as {b}");
    }
}

#[test]
fn checkpoint_round_trips_atomically_and_checks_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latest.safetensors");
    let mut ck = Checkpoint::default();
    ck.insert(
        "W",
        TensorData::new(
            vec![3, 2],
            vec![1.0, -2.0, 3.5, f32::MIN_POSITIVE, 0.0, 1e30],
        ),
    );
    ck.insert("hb", TensorData::new(vec![2], vec![0.1, 0.2]));
    ck.set_meta("epoch", "4");
    ck.save(&path).unwrap();
    // Saving again over the file works (no "file exists" failure) and leaves no temporaries.
    ck.save(&path).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back, ck);
    assert_eq!(back.meta("epoch").unwrap(), "4");
    assert_eq!(
        back.tensor("W", &[3, 2]).unwrap().data[3],
        f32::MIN_POSITIVE
    );
    let e = back.tensor("W", &[2, 3]).unwrap_err().to_string();
    assert!(e.contains("[3, 2]") && e.contains("[2, 3]"), "{e}");
    let e = back.tensor("vb", &[3]).unwrap_err().to_string();
    assert!(e.contains("no tensor 'vb'") && e.contains("W, hb"), "{e}");
    assert!(back.meta("rng").is_err());
    // The file is a standard safetensors file any reader can parse.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("hb").unwrap().shape(), &[2]);
    // A corrupt or missing file is a clear error.
    std::fs::write(&path, b"garbage").unwrap();
    let e = format!("{:#}", Checkpoint::load(&path).unwrap_err());
    assert!(e.contains("not a valid safetensors file"), "{e}");
    let e = format!(
        "{:#}",
        Checkpoint::load(&dir.path().join("none.safetensors")).unwrap_err()
    );
    assert!(e.contains("no such checkpoint"), "{e}");
}

#[test]
fn same_checkpoint_same_bytes() {
    use genlab::run::{Checkpoint, TensorData};
    let mut ck = Checkpoint::default();
    ck.insert("b", TensorData::new(vec![2], vec![1.0, 2.0]));
    ck.insert("a", TensorData::new(vec![1, 3], vec![3.0, 4.0, 5.0]));
    for i in 0..12 {
        ck.set_meta(&format!("genlab.key{i}"), format!("value {i}"));
    }
    // The safetensors crate writes metadata in hash-map order, which differs
    // between maps; genlab sorts the header, so every serialisation agrees.
    let first = ck.to_bytes().unwrap();
    for _ in 0..8 {
        assert_eq!(ck.to_bytes().unwrap(), first);
    }
    assert_eq!(Checkpoint::from_bytes(&first).unwrap(), ck);
}

//! The configuration layers on arbitrary text: the first line as a `--set`
//! assignment, the rest as a user's config file. Errors are fine; panics are not.
#![no_main]

use genlab::config::{parse_toml_text, resolve_layers, to_toml};
use genlab::models::ModelConfig;
use genlab::models::rbm::RbmConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (set, file) = text.split_once('\n').unwrap_or((text, ""));
    let preset = genlab::presets::find("rbm-500").expect("seed preset");
    let file = parse_toml_text("fuzz", file).ok().map(|v| ("fuzz".to_string(), v));
    if let Ok(config) = resolve_layers::<RbmConfig>(preset, file, &[set.to_string()]) {
        let _ = config.model.validate();
        let _ = to_toml(&config);
    }
});

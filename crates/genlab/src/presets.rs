//! Presets: TOML files compiled into the binary, one per named configuration.
//! A preset holds only what differs from its model's defaults (the seed preset).

/// A named configuration of one model family.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub family: &'static str,
    pub description: &'static str,
    pub toml: &'static str,
}

macro_rules! preset {
    ($name:literal, $family:literal, $description:literal) => {
        Preset {
            name: $name,
            family: $family,
            description: $description,
            toml: include_str!(concat!("../presets/", $name, ".toml")),
        }
    };
}

/// Every preset, in the order `genlab presets` lists them.
pub const PRESETS: &[Preset] = &[];

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The closest preset name to `name`, for "did you mean" hints.
pub fn closest(
    name: &str,
    candidates: impl IntoIterator<Item = &'static str>,
) -> Option<&'static str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, c)| *d <= c.len().max(name.len()) / 2)
        .min()
        .map(|(_, c)| c)
}

#[allow(unused_imports)]
pub(crate) use preset;

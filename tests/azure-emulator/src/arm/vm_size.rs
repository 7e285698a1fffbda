//! Which VM sizes Compute accepts. The spec's `VirtualMachineSizeTypes` enum stopped growing in
//! 2023 (the service takes any size a region offers), so a size is valid when it is in that
//! enum or follows Azure's naming convention for sizes:
//! `Standard_<family><vCPUs>[-<constrained vCPUs>]<features>[_<accelerator>][_v<version>]`,
//! e.g. `Standard_D4ds_v5`, `Standard_E64-32s_v5`, `Standard_B2ats_v2`,
//! `Standard_NC24ads_A100_v4`. Case does not matter, as in ARM.

/// The spec's `VirtualMachineSizeTypes` (Compute 2026-04-01) that the convention does not
/// cover (the sizes with zero vCPUs).
const LEGACY: &[&str] = &["basic_a0", "standard_a0"];

/// Series (lower case), longest first so `ds` is not read as `d` + features.
const FAMILIES: &[&str] = &[
    "ncc", "dc", "ds", "ec", "fx", "gs", "hb", "hc", "hx", "nc", "nd", "ng", "np", "nv", "a", "b",
    "d", "e", "f", "g", "h", "l", "m",
];

/// Additive features (lower-case letters after the vCPU count): AMD, block storage, local
/// disk, isolated, low memory, memory, Arm, RDMA, premium storage, tiny memory, confidential,
/// network, accelerated...
const FEATURES: &str = "abcdeilmnoprstx";

/// Whether Compute accepts `size` as a VM size.
pub fn valid(size: &str) -> bool {
    let s = size.to_ascii_lowercase();
    if LEGACY.contains(&s.as_str()) {
        return true;
    }
    let rest = if let Some(r) = s.strip_prefix("standard_") {
        r
    } else if let Some(r) = s.strip_prefix("basic_") {
        // Basic is only the old A series.
        return matches!(r, "a1" | "a2" | "a3" | "a4");
    } else {
        return false;
    };
    let mut parts = rest.split('_');
    let head = parts.next().unwrap_or_default();
    if !valid_head(head) {
        return false;
    }
    let tail: Vec<&str> = parts.collect();
    let mut seen_version = false;
    for (i, part) in tail.iter().enumerate() {
        if seen_version {
            // Only a promotion may follow the version.
            return *part == "promo" && i == tail.len() - 1;
        }
        if let Some(v) = part.strip_prefix('v')
            && !v.is_empty()
            && v.chars().all(|c| c.is_ascii_digit())
        {
            let v: u32 = v.parse().unwrap_or(0);
            if !(1..=7).contains(&v) {
                return false;
            }
            seen_version = true;
            continue;
        }
        if !valid_segment(part) {
            return false;
        }
    }
    true
}

/// `<family><vCPUs>[-<constrained>]<features>`.
fn valid_head(head: &str) -> bool {
    let Some(family) = FAMILIES.iter().find(|f| {
        head.strip_prefix(**f)
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    }) else {
        return false;
    };
    let rest = &head[family.len()..];
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let Ok(cpus) = rest[..digits].parse::<u32>() else {
        return false;
    };
    if digits > 3 || cpus == 0 {
        return false;
    }
    let mut rest = &rest[digits..];
    if let Some(r) = rest.strip_prefix('-') {
        let d = r.chars().take_while(char::is_ascii_digit).count();
        let Ok(constrained) = r[..d].parse::<u32>() else {
            return false;
        };
        // (Old sizes number the size, not the vCPUs: `GS4-8` is a GS4 constrained to 8.)
        if d > 3 || constrained == 0 {
            return false;
        }
        rest = &r[d..];
    }
    rest.len() <= 6
        && rest.chars().all(|c| FEATURES.contains(c))
        && rest
            .chars()
            .enumerate()
            .all(|(i, c)| !rest[..i].contains(c))
}

/// An accelerator (`a100`, `t4`, `mi300x`, `h100`) or a sub-size number (`M176s_3_v3`).
fn valid_segment(part: &str) -> bool {
    if !part.is_empty() && part.len() <= 2 && part.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    // A malformed version (`v5x`) is no accelerator.
    if part.starts_with('v') && part[1..].starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let letters = part.chars().take_while(char::is_ascii_lowercase).count();
    let digits = part[letters..]
        .chars()
        .take_while(char::is_ascii_digit)
        .count();
    let suffix = &part[letters + digits..];
    (1..=2).contains(&letters)
        && (1..=3).contains(&digits)
        && suffix.len() <= 1
        && suffix.chars().all(|c| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::valid;

    #[test]
    fn current_sizes_are_accepted() {
        for s in [
            "Standard_B2s",
            "Standard_B2ats_v2",
            "Standard_B2pts_v2",
            "Standard_D2s_v5",
            "Standard_D4ds_v5",
            "Standard_D2as_v6",
            "Standard_D2alds_v6",
            "Standard_D2plds_v5",
            "Standard_DS2_v2",
            "Standard_DS13-4_v2",
            "Standard_E64-32s_v5",
            "Standard_E2bds_v5",
            "Standard_EC2as_v5",
            "Standard_DC2s_v3",
            "Standard_F2s_v2",
            "Standard_FX4mds",
            "Standard_HB176rs_v4",
            "Standard_HX176rs",
            "Standard_L8s_v3",
            "Standard_M416ms_v2",
            "Standard_M176s_3_v3",
            "Standard_NC24ads_A100_v4",
            "Standard_NC4as_T4_v3",
            "Standard_ND96isr_H100_v5",
            "Standard_ND96isr_MI300X_v5",
            "Standard_NV36adms_A10_v5",
            "Standard_NCC40ads_H100_v5",
            "Standard_D2s_v3_Promo",
            "standard_b2s",
            "Basic_A1",
            "Standard_A0",
        ] {
            assert!(valid(s), "{s} should be a valid size");
        }
    }

    #[test]
    fn every_size_of_the_spec_enum_is_accepted() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/schema-compute-2026-04-01.json"))
                .expect("schema");
        let sizes = schema["enums"]["VirtualMachineSizeTypes"]
            .as_array()
            .expect("the enum");
        assert_eq!(sizes.len(), 166);
        for s in sizes {
            let s = s.as_str().expect("a string");
            assert!(valid(s), "{s} is in the spec's VirtualMachineSizeTypes");
        }
    }

    #[test]
    fn made_up_sizes_are_refused() {
        for s in [
            "",
            "B2s",
            "Standard_",
            "Standard_D",
            "Standard_Q4s_v5",
            "Standard_D0s_v5",
            "Standard_D2s_v99",
            "Standard_D2s_v5x",
            "Standard_D2zz_v5",
            "Standard_D2ss_v5",
            "Standard_D4-0s_v5",
            "Standard_D2s_v5_v6",
            "Standard_D2s_Promo_v5",
            "Basic_D2",
            "Premium_B2s",
            "Standard_B2s ",
            "Standard_NC24ads_A1000000_v4",
        ] {
            assert!(!valid(s), "{s:?} should be refused");
        }
    }
}

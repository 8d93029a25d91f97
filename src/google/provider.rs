//! Workforce provider resource names, `//iam.googleapis.com/locations/L/workforcePools/P/providers/N`.

/// The parts of a workforce provider resource name: location, pool, provider.
pub fn parse_workforce_provider(provider: &str) -> Option<(&str, &str, &str)> {
    let rest = provider.strip_prefix("//iam.googleapis.com/locations/")?;
    let mut parts = rest.split('/');
    let location = parts.next()?;
    let (pools, pool, providers, name) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    if pools != "workforcePools"
        || providers != "providers"
        || parts.next().is_some()
        || ![location, pool, name].iter().all(|s| valid(s))
    {
        return None;
    }
    Some((location, pool, name))
}

//! RFC 8693 token type identifiers shared by configuration, the route layer and the broker.

/// The RFC 8693 token-exchange grant.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of a JWT.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an OAuth access token.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 token type of an OpenID Connect ID token.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Subject token types a caller may present.
pub const SUBJECT_TOKEN_TYPES: &[&str] =
    &[TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN];
/// Subject token types Google STS accepts for an OIDC workforce provider.
pub const UPSTREAM_SUBJECT_TOKEN_TYPES: &[&str] = &[TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN];

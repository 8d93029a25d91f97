//! Black-box tests: the real application on a random port, the dev issuer as Auth0 and the
//! Google STS stand-in, all over real HTTP.

mod cache;
mod db;
mod exchange;
mod google_auth;
mod helpers;
mod keys;
mod metrics;
mod proxy;
mod records;
mod token_cache;
mod validation;
mod wire;

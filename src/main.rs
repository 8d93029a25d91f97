use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use sts_bridge::assertion::{generate_file, KeyAlgorithm, Minter};
use sts_bridge::config::Settings;
use sts_bridge::{client, devstack, startup::Application, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exchanges OIDC (Auth0) access tokens for short-lived Google Cloud credentials.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service from a configuration file and STS_BRIDGE__* variables.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "STS_BRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply the issuance store's migrations and exit.
    Migrate {
        /// TOML configuration file.
        #[arg(long, env = "STS_BRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and exit.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, env = "STS_BRIDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Also fetch each issuer's discovery document and key set.
        #[arg(long)]
        probe: bool,
    },
    /// Development: the service with a local issuer, Google STS and BigQuery stand-ins,
    /// loopback only.
    Dev(Box<DevArgs>),
    /// Signing keys of the bridge's own issuer (assertion mode).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Sign in to the identity provider (device code, or the browser) and keep the sign-in.
    Login(LoginArgs),
    /// Forget the stored sign-in (and revoke it at the identity provider if it allows).
    Logout {
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Print the signed-in person's access token as Google's executable-sourced
    /// credentials expect it (renewed when less than a minute is left).
    #[command(name = "auth0-token")]
    Auth0Token {
        #[command(flatten)]
        profile: ProfileArg,
    },
    /// Write an external_account credential file that runs `sts-bridge auth0-token` and
    /// exchanges at sts-bridge.
    CredentialsFile {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        profile: ProfileArg,
        /// Write the file here (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Project the client libraries bill API calls to (`quota_project_id`).
        #[arg(long)]
        quota_project: Option<String>,
    },
    /// Exchange the signed-in person's token at sts-bridge and print only the Google token.
    PrintAccessToken {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        profile: ProfileArg,
        /// Google scope to ask for (repeatable); the target's default scopes otherwise.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Serve the signed-in person's Google token to Google client libraries as a GCE
    /// metadata server does (loopback only; set GCE_METADATA_HOST and GCE_METADATA_IP).
    MetadataServer(Box<MetadataArgs>),
    /// Print the bridge's public keys as the JWKS a Google workforce provider accepts
    /// (`gcloud … create-oidc --jwk-json-path=FILE`, Terraform `jwks_json`).
    Jwks {
        /// TOML configuration file.
        #[arg(long, env = "STS_BRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ProfileArg {
    /// Name of the stored sign-in.
    #[arg(long, env = "STS_BRIDGE_PROFILE", default_value = "default")]
    profile: String,
}

#[derive(Args)]
struct ServerArgs {
    /// sts-bridge's base URL, e.g. https://sts-bridge.internal.
    #[arg(long, env = "STS_BRIDGE_SERVER")]
    server: String,
    /// The sts-bridge target to exchange for, e.g. bigquery.
    #[arg(long, env = "STS_BRIDGE_TARGET")]
    target: String,
}

#[derive(Args)]
struct LoginArgs {
    /// Issuer URL, e.g. https://TENANT.auth0.com/ (remembered in the profile).
    #[arg(long)]
    issuer: Option<String>,
    /// The OAuth client id of a native application (remembered in the profile).
    #[arg(long)]
    client_id: Option<String>,
    /// The API identifier sts-bridge accepts (Auth0 `audience`; remembered in the profile).
    #[arg(long)]
    audience: Option<String>,
    /// Sign in through the browser (PKCE, loopback redirect) instead of with a device code.
    #[arg(long)]
    browser: bool,
    #[command(flatten)]
    profile: ProfileArg,
}

#[derive(Args)]
struct MetadataArgs {
    /// Loopback address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    profile: ProfileArg,
    /// Project id to answer project/project-id with.
    #[arg(long)]
    project: Option<String>,
    /// Account email to show; the person's (from their token) otherwise.
    #[arg(long)]
    email: Option<String>,
    /// Scope advertised for the account (repeatable); cloud-platform otherwise.
    #[arg(long = "scope")]
    scopes: Vec<String>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new private key (PKCS#8 PEM, mode 0600); never overwrites a file.
    Generate {
        /// ES256 (P-256) or RS256 (RSA 2048).
        #[arg(long, default_value = "ES256")]
        alg: KeyAlgorithm,
        /// File to create.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct DevArgs {
    #[command(subcommand)]
    command: Option<DevCommand>,
    /// Address of the service.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the dev issuer.
    #[arg(long, default_value = "127.0.0.1:8081")]
    issuer_listen: SocketAddr,
    /// Address of the Google STS stand-in.
    #[arg(long, default_value = "127.0.0.1:8082")]
    google_listen: SocketAddr,
    /// Address of the BigQuery stand-in.
    #[arg(long, default_value = "127.0.0.1:8083")]
    bigquery_listen: SocketAddr,
    /// Folder for the files the dev stack writes (token, credential file).
    #[arg(long, default_value = ".dev")]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum DevCommand {
    /// Print an access token from the running dev issuer.
    Token {
        /// Subject, e.g. `auth0|alice`.
        #[arg(long)]
        sub: String,
        /// RBAC permission to include (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Group to include (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// The dev issuer.
        #[arg(long, default_value = devstack::cli::DEFAULT_ISSUER)]
        issuer: String,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Migrate { config } => migrate(config).await,
        Command::CheckConfig { config, probe } => check_config(config, probe).await,
        Command::Keys {
            command: KeysCommand::Generate { alg, out },
        } => generate_file(alg, &out).map(|()| {
            println!(
                "wrote a new {} key to {} (mode 0600); add it to the keys of [assertion] with state = \"next\"",
                alg.as_str(),
                out.display()
            )
        }),
        Command::Jwks { config } => print_jwks(config),
        Command::Auth0Token { profile } => return auth0_token(&profile.profile).await,
        Command::Login(args) => client::login::login(client::login::LoginOptions {
            profile: args.profile.profile,
            issuer: args.issuer,
            client_id: args.client_id,
            audience: args.audience,
            browser: args.browser,
        })
        .await
        .map_err(|e| e.to_string()),
        Command::Logout { profile } => client::login::logout(&profile.profile)
            .await
            .map_err(|e| e.to_string()),
        Command::CredentialsFile {
            server,
            profile,
            out,
            quota_project,
        } => credentials_file(
            &server,
            &profile.profile,
            out.as_deref(),
            quota_project.as_deref(),
        ),
        Command::PrintAccessToken {
            server,
            profile,
            scopes,
        } => print_access_token(&server, &profile.profile, &scopes)
            .await
            .map_err(|e| e.to_string()),
        Command::MetadataServer(args) => metadata_server(*args).await.map_err(|e| e.to_string()),
        Command::Dev(args) => match args.command {
            Some(DevCommand::Token {
                sub,
                permissions,
                groups,
                ttl,
                issuer,
                out,
            }) => {
                let req = devstack::MintRequest {
                    sub,
                    permissions,
                    groups,
                    ttl_secs: Some(ttl),
                    ..Default::default()
                };
                devstack::cli::print_token(&issuer, &req, out.as_deref()).await
            }
            None => {
                devstack::cli::run(devstack::cli::DevOptions {
                    listen: args.listen,
                    issuer_listen: args.issuer_listen,
                    google_listen: args.google_listen,
                    bigquery_listen: args.bigquery_listen,
                    dir: args.dir,
                })
                .await
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sts-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the executable-sourced answer; nothing else may reach stdout or stderr, which
/// google-auth reads together as the answer.
async fn auth0_token(profile: &str) -> ExitCode {
    let result =
        client::auth0_token::fresh_session(profile, client::auth0_token::MIN_LEFT_SECS).await;
    println!("{}", client::auth0_token::executable_answer(&result));
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn credentials_file(
    server: &ServerArgs,
    profile: &str,
    out: Option<&std::path::Path>,
    quota_project: Option<&str>,
) -> Result<(), String> {
    client::store::check_profile_name(profile).map_err(|e| e.to_string())?;
    let server =
        client::exchange::Server::new(&server.server, &server.target).map_err(|e| e.to_string())?;
    // google-auth runs the command without a shell or PATH lookup guarantees: name this
    // very binary by its absolute path.
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| format!("cannot find this program's own path: {e}"))?;
    let file = client::exchange::credentials_file(&server, &exe, profile, quota_project);
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())? + "\n";
    match out {
        Some(path) => {
            client::store::write_private(path, text.as_bytes())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            eprintln!(
                "wrote {}; use it with GOOGLE_APPLICATION_CREDENTIALS={} and \
                 GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1",
                path.display(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

async fn print_access_token(
    server: &ServerArgs,
    profile: &str,
    scopes: &[String],
) -> Result<(), client::ClientError> {
    let server = client::exchange::Server::new(&server.server, &server.target)?;
    let session =
        client::auth0_token::fresh_session(profile, client::auth0_token::MIN_LEFT_SECS).await?;
    let token = client::exchange::exchange(
        &client::http_client(),
        &server,
        &session.access_token,
        scopes,
    )
    .await?;
    println!("{}", token.access_token.expose());
    Ok(())
}

async fn metadata_server(args: MetadataArgs) -> Result<(), client::ClientError> {
    let server = client::exchange::Server::new(&args.server.server, &args.server.target)?;
    client::store::check_profile_name(&args.profile.profile)?;
    client::metadata_server::run(client::metadata_server::MetadataOptions {
        listen: args.listen,
        server,
        profile: args.profile.profile,
        project: args.project,
        email: args.email,
        scopes: args.scopes,
    })
    .await
}

/// The configuration and, when it has an `[assertion]` issuer, its loaded keys.
fn load_with_keys(config: Option<PathBuf>) -> Result<(Settings, Option<Minter>), String> {
    let settings = Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
    let minter = settings
        .assertion
        .as_ref()
        .map(Minter::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok((settings, minter))
}

fn print_jwks(config: Option<PathBuf>) -> Result<(), String> {
    let (_, minter) = load_with_keys(config)?;
    let minter = minter.ok_or("the configuration has no [assertion] section, so no keys")?;
    let json = serde_json::to_string_pretty(&minter.jwks()).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

async fn serve(config: Option<PathBuf>) -> Result<(), String> {
    let settings = Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
    telemetry::init(&settings.log.format, &settings.log.filter);
    let app = Application::build(settings)
        .await
        .map_err(|e| e.to_string())?;
    #[cfg(unix)]
    if let Some(path) = config {
        sts_bridge::startup::reload_on_sighup(app.reloader(), path).map_err(|e| e.to_string())?;
    }
    tracing::info!(port = app.port(), "sts-bridge listening");
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

async fn check_config(config: Option<PathBuf>, probe: bool) -> Result<(), String> {
    match &config {
        Some(path) => println!("configuration file: {}", path.display()),
        None => println!(
            "no configuration file given (neither --config nor STS_BRIDGE_CONFIG): \
             only the built-in defaults and STS_BRIDGE__* variables apply"
        ),
    }
    // Loading the signing keys proves they are readable and well-formed.
    let (settings, _) = load_with_keys(config)?;
    print!("{}", settings.summary());
    for warning in settings.warnings() {
        println!("warning: {warning}");
    }
    if probe {
        let mut failed = 0;
        for issuer in &settings.issuers {
            match sts_bridge::identity::probe(issuer).await {
                Ok(found) => println!("probe {}: {found}", issuer.issuer),
                Err(e) => {
                    failed += 1;
                    println!("probe {}: FAILED: {e}", issuer.issuer);
                }
            }
        }
        if failed > 0 {
            return Err(format!("{failed} issuer(s) could not be probed"));
        }
    }
    println!("configuration is valid");
    Ok(())
}

async fn migrate(config: Option<PathBuf>) -> Result<(), String> {
    let settings = Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
    let audit = &settings.audit;
    let store =
        sts_bridge::audit::Store::connect(audit.database_url.as_deref(), &audit.sqlite_path, 1)
            .await
            .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    println!("{} migrations applied", store.engine());
    Ok(())
}

//! `talosctl config`: edit and inspect talosconfig files (contexts, endpoints, nodes).
//!
//! Every change reads the whole file, edits it, and replaces it atomically with mode 0600. Keys
//! talosctl does not know are kept and reported as warnings.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use talos_machinery::duration::parse_go_duration;
use talos_machinery::pki;
use talos_machinery::role::RoleSet;
use talos_machinery::talosconfig::{Context, Talosconfig};

use crate::files;
use crate::global::{self, ConfigEnv, GlobalArgs};
use crate::output;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set the endpoints of the current context (or of --context).
    #[command(visible_alias = "endpoints")]
    Endpoint {
        #[arg(value_name = "ENDPOINT")]
        endpoints: Vec<String>,
    },
    /// Set the default target nodes of the current context (or of --context).
    #[command(visible_alias = "nodes")]
    Node {
        #[arg(value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Make a context the current one.
    #[command(visible_alias = "use-context")]
    Context {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List the contexts; the current one is marked with `*`.
    #[command(visible_alias = "get-contexts")]
    Contexts,
    /// Add the contexts of another talosconfig and switch to its current context. A name that is
    /// taken gets a -1, -2, … suffix. The target file is created if missing.
    Merge {
        #[arg(value_name = "FILE")]
        from: PathBuf,
    },
    /// Add a context from PEM files.
    Add {
        #[arg(value_name = "NAME")]
        name: String,
        /// CA certificate (PEM) of the cluster's Talos API.
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// Client certificate (PEM).
        #[arg(long, value_name = "FILE")]
        crt: PathBuf,
        /// Client private key (PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Show the current context: endpoints, nodes, roles and certificate expiry.
    Info,
    /// Ask a node for a new client certificate and write a talosconfig that uses it.
    ///
    /// The node (exactly one, a control-plane node: it holds the OS CA key) signs a certificate
    /// whose Organization names the roles. The new file keeps the current context's endpoints
    /// and nodes. Needs the os:admin role.
    #[command(after_help = CONFIG_NEW_EXAMPLES)]
    New(NewArgs),
}

const CONFIG_NEW_EXAMPLES: &str = "\
Examples:
  # A read-only talosconfig for monitoring, valid for 30 days
  talosctl -n 10.5.0.2 config new reader-talosconfig --roles os:reader --crt-ttl 720h

Roles: os:admin, os:operator, os:reader, os:etcd:backup, os:image:verifier, os:meta:writer,
os:impersonator.";

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Where to write the talosconfig.
    #[arg(value_name = "PATH", default_value = "talosconfig")]
    pub path: PathBuf,
    /// Roles of the certificate, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "os:admin",
        value_name = "ROLES"
    )]
    pub roles: Vec<String>,
    /// How long the certificate is valid, as a Go duration.
    #[arg(long, default_value = "87600h", value_name = "DURATION")]
    pub crt_ttl: String,
    /// Replace PATH if it exists.
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(global: &GlobalArgs, args: ConfigArgs) -> anyhow::Result<()> {
    let path = global::talosconfig_path(
        global.talosconfig.as_deref(),
        &ConfigEnv::from_process(),
        Path::exists,
    )?;
    let context = global.context.as_deref();
    match args.command {
        ConfigCommand::Endpoint { endpoints } => edit(&path, |config| {
            let (name, ctx) = config.current_mut(context)?;
            ctx.endpoints = endpoints;
            Ok(format!("set endpoints of context {name:?}"))
        }),
        ConfigCommand::Node { nodes } => edit(&path, |config| {
            let (name, ctx) = config.current_mut(context)?;
            ctx.nodes = nodes;
            Ok(format!("set nodes of context {name:?}"))
        }),
        ConfigCommand::Context { name } => edit(&path, |config| {
            config.set_current(&name)?;
            Ok(format!("switched to context {name:?}"))
        }),
        ConfigCommand::Contexts => {
            print!("{}", contexts_table(&load(&path)?));
            Ok(())
        }
        ConfigCommand::Merge { from } => merge(&path, &from),
        ConfigCommand::Add { name, ca, crt, key } => {
            let new = context_from_files(&ca, &crt, &key)?;
            edit_or_create(&path, |config| {
                if config.contexts.contains_key(&name) {
                    bail!("context {name:?} already exists");
                }
                config.insert(&name, new);
                Ok(format!("added context {name:?}"))
            })
        }
        ConfigCommand::New(new) => new_config(global, &path, new).await,
        ConfigCommand::Info => {
            let config = load(&path)?;
            let (name, ctx) = config
                .current(context)
                .with_context(|| format!("talosconfig {}", path.display()))?;
            print!("{}", info(name, ctx, SystemTime::now())?);
            Ok(())
        }
    }
}

async fn new_config(global: &GlobalArgs, current: &Path, args: NewArgs) -> anyhow::Result<()> {
    let ttl = parse_go_duration(&args.crt_ttl)
        .filter(|d| !d.is_zero())
        .with_context(|| {
            format!(
                "--crt-ttl {:?} is not a positive duration (e.g. 720h)",
                args.crt_ttl
            )
        })?;
    if args.path.exists() && !args.force {
        bail!("{} exists: pass --force to replace it", args.path.display());
    }
    let source = load(current)?;
    let (_, source_context) = source
        .current(global.context.as_deref())
        .with_context(|| format!("talosconfig {}", current.display()))?;
    let targets = global::targets(global, false).await?;
    let [target] = targets.as_slice() else {
        bail!(
            "command \"config new\" requires exactly one node (got {})",
            targets.len()
        );
    };
    let generated = target
        .client
        .generate_client_configuration(args.roles, ttl)
        .await
        .context("error generating the client configuration")?;
    let text = String::from_utf8(generated.talosconfig)
        .context("the node sent a talosconfig that is not UTF-8")?;
    let mut config =
        Talosconfig::from_yaml(&text).context("the node sent an invalid talosconfig")?;
    let (name, context) = config.current_mut(None)?;
    context.endpoints = source_context.effective_endpoints();
    context.nodes = source_context.nodes.clone();
    let name = name.to_owned();
    files::write_atomic(&args.path, config.to_yaml()?.as_bytes(), 0o600)?;
    let (_, context) = config.current(None)?;
    print!(
        "wrote {} (context {name:?})\n{}",
        args.path.display(),
        info(&name, context, SystemTime::now())?
    );
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<Talosconfig> {
    let text = files::read_text(path).with_context(|| format!("talosconfig {}", path.display()))?;
    let config =
        Talosconfig::from_yaml(&text).with_context(|| format!("talosconfig {}", path.display()))?;
    for key in config.unknown_keys() {
        eprintln!(
            "warning: talosconfig {}: unknown key {key} (kept as is)",
            path.display()
        );
    }
    Ok(config)
}

fn save(path: &Path, config: &Talosconfig) -> anyhow::Result<()> {
    files::write_atomic(path, config.to_yaml()?.as_bytes(), 0o600)
        .with_context(|| format!("talosconfig {}", path.display()))
}

/// Loads, changes and saves the file; the change returns the message to print.
fn edit(
    path: &Path,
    change: impl FnOnce(&mut Talosconfig) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let mut config = load(path)?;
    let message = change(&mut config).with_context(|| format!("talosconfig {}", path.display()))?;
    save(path, &config)?;
    eprintln!("{message} in {}", path.display());
    Ok(())
}

fn edit_or_create(
    path: &Path,
    change: impl FnOnce(&mut Talosconfig) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    if path.exists() {
        return edit(path, change);
    }
    let mut config = Talosconfig::default();
    let message = change(&mut config)?;
    save(path, &config)?;
    eprintln!("{message} in new {}", path.display());
    Ok(())
}

fn merge(path: &Path, from: &Path) -> anyhow::Result<()> {
    let incoming = load(from)?;
    if incoming.contexts.is_empty() {
        bail!("talosconfig {}: has no contexts to merge", from.display());
    }
    edit_or_create(path, |config| {
        for (old, new) in config.merge(incoming) {
            eprintln!("renamed talosconfig context {old:?} -> {new:?}");
        }
        Ok(format!("merged {}", from.display()))
    })
}

fn context_from_files(ca: &Path, crt: &Path, key: &Path) -> anyhow::Result<Context> {
    let ca_pem = files::read_text(ca)?;
    let crt_pem = files::read_text(crt)?;
    let key_pem = files::read_text(key)?;
    pki::pem_to_der_certs(&ca_pem).with_context(|| format!("--ca {}", ca.display()))?;
    let matches = pki::key_matches_cert(&crt_pem, &key_pem)
        .with_context(|| format!("--crt {} / --key {}", crt.display(), key.display()))?;
    if !matches {
        bail!(
            "--key {} does not belong to --crt {}",
            key.display(),
            crt.display()
        );
    }
    Ok(Context::new(Vec::new(), &ca_pem, &crt_pem, &key_pem))
}

fn contexts_table(config: &Talosconfig) -> String {
    let mut rows = vec![vec![
        "CURRENT".to_owned(),
        "NAME".to_owned(),
        "ENDPOINTS".to_owned(),
        "NODES".to_owned(),
    ]];
    for (name, ctx) in &config.contexts {
        let current = config.context.as_deref() == Some(name.as_str());
        rows.push(vec![
            if current { "*" } else { "" }.to_owned(),
            name.clone(),
            ctx.effective_endpoints().join(","),
            ctx.nodes.join(","),
        ]);
    }
    output::table(&rows)
}

fn info(name: &str, ctx: &Context, now: SystemTime) -> anyhow::Result<String> {
    let crt = ctx.crt_pem().with_context(|| format!("context {name:?}"))?;
    let der = pki::pem_to_der_certs(&crt).with_context(|| format!("context {name:?}: crt"))?;
    let first = der
        .first()
        .with_context(|| format!("context {name:?}: crt holds no certificate"))?;
    let roles =
        RoleSet::from_organizations(pki::cert_organizations(first)?.iter().map(String::as_str));
    let (_, not_after) = pki::cert_validity(first)?;
    let list = |items: &[String]| {
        if items.is_empty() {
            "not defined".to_owned()
        } else {
            items.join(", ")
        }
    };
    let role_names: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
    Ok(format!(
        "Current context:     {name}\nNodes:               {}\nEndpoints:           {}\nRoles:               {}\nCertificate expires: {}\n",
        list(&ctx.nodes),
        list(&ctx.effective_endpoints()),
        list(&role_names),
        expiry(not_after, now),
    ))
}

/// `2027-03-01 (in 364 days)` or `2024-01-01 (expired 3 days ago)`.
fn expiry(not_after: SystemTime, now: SystemTime) -> String {
    let secs = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let at = secs(not_after);
    let days_left = (at - secs(now)).div_euclid(86_400);
    let (y, m, d) = civil_date(at.div_euclid(86_400));
    let relative = if days_left >= 0 {
        format!("in {days_left} days")
    } else {
        format!("expired {} days ago", -days_left)
    };
    format!("{y:04}-{m:02}-{d:02} ({relative})")
}

/// Days since 1970-01-01 to a proleptic Gregorian date.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use talos_machinery::role::Role;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

    #[test]
    fn info_shows_roles_and_expiry() {
        let now = SystemTime::now();
        let ca = pki::new_os_ca(now).unwrap();
        let crt = pki::issue_client_cert(
            &ca,
            &[Role::Reader, Role::Operator],
            Duration::from_secs(10 * 86_400 + 3600),
            now,
        )
        .unwrap();
        let mut ctx = Context::new(
            vec!["10.0.0.2".into()],
            &ca.cert_pem,
            &crt.cert_pem,
            &crt.key_pem,
        );
        ctx.nodes = vec!["10.0.0.3".into(), "10.0.0.4".into()];
        let text = info("lab", &ctx, now).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Current context:     lab");
        assert_eq!(lines[1], "Nodes:               10.0.0.3, 10.0.0.4");
        assert_eq!(lines[2], "Endpoints:           10.0.0.2");
        assert_eq!(lines[3], "Roles:               os:operator, os:reader");
        assert!(lines[4].ends_with("(in 10 days)"), "{}", lines[4]);

        let empty = Context::default();
        let err = info("x", &empty, now).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "context \"x\": Context field crt is empty"
        );
    }

    #[test]
    fn contexts_table_marks_the_current_one() {
        let mut config = Talosconfig::with_context(
            "a",
            Context {
                endpoints: vec!["1".into(), "2".into()],
                ..Context::default()
            },
        );
        config.insert(
            "b",
            Context {
                nodes: vec!["3".into()],
                ..Context::default()
            },
        );
        assert_eq!(
            contexts_table(&config),
            "CURRENT   NAME   ENDPOINTS   NODES\n*         a      1,2         \n          b                  3\n"
        );
    }
}

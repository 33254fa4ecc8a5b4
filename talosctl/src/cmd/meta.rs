//! `talosctl meta write|delete`.

use clap::{Args, Subcommand};

use crate::global::{self, GlobalArgs};

pub const META_EXAMPLES: &str = "\
Examples:
  # The value for ${code} in a talos.config= URL
  talosctl -n 10.5.0.2 meta write 0xb rack-7

  # Network settings for the metal platform, read at boot (key 0xa)
  talosctl -n 10.5.0.2 meta write 0xa \"$(cat network.yaml)\"

  # Remove it again
  talosctl -n 10.5.0.2 meta delete 0xb

META is the small key/value partition of the system disk; it survives reboots and upgrades
and is emptied by a reset that wipes it. Keys are 8 bits (0x00-0xff, in hex with 0x or
decimal); keys 0-5 are reserved. Needs os:admin or os:meta:writer, and a node booted from a
Talos system disk.";

#[derive(Debug, Args)]
pub struct MetaArgs {
    #[command(subcommand)]
    pub command: MetaCommand,
}

#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Set a META key on each target node.
    Write {
        /// The key: 0x0b, or 11.
        #[arg(value_name = "KEY", value_parser = parse_key)]
        key: u8,
        /// The value, stored as given.
        #[arg(value_name = "VALUE")]
        value: String,
    },
    /// Delete a META key on each target node; a node where it is not set answers NotFound.
    Delete {
        /// The key: 0x0b, or 11.
        #[arg(value_name = "KEY", value_parser = parse_key)]
        key: u8,
    },
}

fn parse_key(text: &str) -> Result<u8, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => text.parse::<u8>(),
    };
    parsed.map_err(|e| format!("{text:?} is not a META key from 0x00 to 0xff: {e}"))
}

pub async fn run(global: &GlobalArgs, args: MetaArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) = match &args.command {
        MetaCommand::Write { key, value } => {
            global::each(&targets, |t| async move {
                Ok(t.client
                    .meta_write(u32::from(*key), value.clone().into_bytes())
                    .await?)
            })
            .await
        }
        MetaCommand::Delete { key } => {
            global::each(&targets, |t| async move {
                Ok(t.client.meta_delete(u32::from(*key)).await?)
            })
            .await
        }
    };
    let (verb, key) = match args.command {
        MetaCommand::Write { key, .. } => ("written", key),
        MetaCommand::Delete { key } => ("deleted", key),
    };
    for (label, ()) in ok {
        println!("{label}: META key {key:#04x} {verb}");
    }
    global::check_failures(failed, targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_or_decimal_bytes() {
        assert_eq!(parse_key("0xb"), Ok(0x0b));
        assert_eq!(parse_key("0x0A"), Ok(0x0a));
        assert_eq!(parse_key("11"), Ok(11));
        assert!(
            parse_key("0x100")
                .unwrap_err()
                .starts_with("\"0x100\" is not a META key from 0x00 to 0xff")
        );
    }
}

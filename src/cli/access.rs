//! `cohort access`: shows or changes who besides the owner and root may use the daemon. With a
//! daemon running the change goes through it (it re-applies the socket's mode and remembers the
//! setting at once); with none, the setting is stored in COHORT_HOME for the next daemon.

use super::AccessArgs;
use crate::api::client::Client;
use crate::api::AccessReply;
use crate::home::access::{self, GroupAccess};
use crate::home::Home;
use anyhow::Result;

pub async fn run(a: AccessArgs, home: Home) -> Result<()> {
    let change = if a.off {
        Some(None)
    } else if let Some(name) = &a.group {
        Some(Some(GroupAccess::for_group(name, a.read_only)?))
    } else {
        None
    };
    let client = Client::connect_existing(home.clone()).await?;
    let reply = match (change, client) {
        (None, Some(c)) => c.get::<AccessReply>("/access").await?,
        (Some(shared), Some(c)) => c.post::<_, AccessReply>("/access", &shared).await?,
        (None, None) => AccessReply {
            owner_uid: nix::unistd::geteuid().as_raw(),
            shared: access::load(&home)?,
        },
        (Some(shared), None) => {
            home.ensure_dirs()?;
            access::store(&home, shared.as_ref())?;
            AccessReply {
                owner_uid: nix::unistd::geteuid().as_raw(),
                shared,
            }
        }
    };
    match &reply.shared {
        None => println!("access: the owner (uid {}) and root only", reply.owner_uid),
        Some(s) => {
            println!(
                "access: the owner (uid {}), root, and {}",
                reply.owner_uid,
                s.describe()
            );
            for dir in access::unreachable_ancestors(&home.root, s.gid) {
                eprintln!(
                    "warning: members of {} cannot reach {}: {dir} is not searchable by them (chmod o+x {dir}, or choose a COHORT_HOME they can reach, e.g. /srv/cohort)",
                    s.group,
                    home.socket().display()
                );
            }
        }
    }
    Ok(())
}

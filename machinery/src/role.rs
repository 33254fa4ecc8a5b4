//! Talos API roles, carried as the Organization names of client certificates.

use std::fmt;

/// One role of the Talos API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Operator,
    Reader,
    EtcdBackup,
    ImageVerifier,
    MetaWriter,
    Impersonator,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Operator,
        Role::Reader,
        Role::EtcdBackup,
        Role::ImageVerifier,
        Role::MetaWriter,
        Role::Impersonator,
    ];

    /// The name written into certificates and accepted on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "os:admin",
            Role::Operator => "os:operator",
            Role::Reader => "os:reader",
            Role::EtcdBackup => "os:etcd:backup",
            Role::ImageVerifier => "os:image:verifier",
            Role::MetaWriter => "os:meta:writer",
            Role::Impersonator => "os:impersonator",
        }
    }

    /// The role with this exact name, if any.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RoleSet(u8);

impl RoleSet {
    pub const fn empty() -> RoleSet {
        RoleSet(0)
    }

    pub fn of(roles: &[Role]) -> RoleSet {
        let mut set = RoleSet::empty();
        for &role in roles {
            set.insert(role);
        }
        set
    }

    /// Every role.
    pub fn all() -> RoleSet {
        RoleSet::of(&Role::ALL)
    }

    /// The roles named by a certificate's Organization entries. Empty and unknown names are
    /// ignored: they grant nothing.
    pub fn from_organizations<'a>(organizations: impl IntoIterator<Item = &'a str>) -> RoleSet {
        let mut set = RoleSet::empty();
        for role in organizations.into_iter().filter_map(Role::parse) {
            set.insert(role);
        }
        set
    }

    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn intersects(self, other: RoleSet) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL
            .into_iter()
            .filter(move |&role| self.contains(role))
    }
}

impl FromIterator<Role> for RoleSet {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> RoleSet {
        let mut set = RoleSet::empty();
        for role in iter {
            set.insert(role);
        }
        set
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, role) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(role.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::Admin.as_str(), "os:admin");
        assert_eq!(Role::EtcdBackup.as_str(), "os:etcd:backup");
        assert_eq!(Role::parse("os:Admin"), None);
    }

    #[test]
    fn organizations_ignore_empty_and_unknown() {
        let set = RoleSet::from_organizations(["", "os:reader", "acme", "os:etcd:backup"]);
        assert_eq!(set, RoleSet::of(&[Role::Reader, Role::EtcdBackup]));
        assert!(RoleSet::from_organizations(["", "talos"]).is_empty());
    }

    #[test]
    fn set_operations() {
        let mut set = RoleSet::empty();
        assert!(set.is_empty());
        set.insert(Role::Operator);
        assert!(set.contains(Role::Operator));
        assert!(!set.contains(Role::Admin));
        assert!(set.intersects(RoleSet::of(&[Role::Admin, Role::Operator])));
        assert!(!set.intersects(RoleSet::of(&[Role::Admin, Role::Reader])));
        assert!(!set.intersects(RoleSet::empty()));
        assert_eq!(RoleSet::all().iter().count(), Role::ALL.len());
    }

    #[test]
    fn display_is_comma_separated_in_order() {
        let set = RoleSet::of(&[Role::Reader, Role::Admin]);
        assert_eq!(set.to_string(), "os:admin,os:reader");
        assert_eq!(RoleSet::empty().to_string(), "");
    }
}

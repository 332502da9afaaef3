//! Containers' host-side veths: the tc attachment of `nd_from_container` and the veth's
//! `ND_VETHS` entry (its network's flags and bridge MAC), which live and die together.

use netdriver_common::{MAP_VETHS, PROG_FROM_CONTAINER, VethInfo};
use nix::net::if_::if_nametoindex;

use super::{Dataplane, DataplaneError, attach, detach, ifindex, is_not_found, joined, map_err};

impl Dataplane {
    /// Attaches `nd_from_container` to the tc ingress of a container's host-side veth and
    /// records the veth's network in `ND_VETHS` (first, so the program's first packet finds
    /// it). Idempotent; an entry of an older interface of the same name is removed.
    pub fn attach_container(&mut self, ifname: &str, veth: VethInfo) -> Result<(), DataplaneError> {
        let previous = self.containers.get(ifname).map(|a| a.ifindex);
        let index = ifindex(ifname)?;
        self.set_veth(index, veth)?;
        let attached = attach(
            &mut self.ebpf,
            &self.pin_dir,
            &mut self.containers,
            PROG_FROM_CONTAINER,
            ifname,
        );
        let mut errors: Vec<DataplaneError> = Vec::new();
        // An older interface's link is released by `attach` whether or not the new one
        // comes up.
        if let Some(old) = previous.filter(|old| *old != index) {
            errors.extend(self.remove_veth(old).err());
        }
        if let Err(e) = attached {
            errors.insert(0, e);
            errors.extend(self.remove_veth(index).err());
        }
        joined(errors)
    }

    /// Detaches `nd_from_container` and removes the veth's `ND_VETHS` entry; succeeds if the
    /// interface is already gone. A veth this run did not attach (an endpoint removed before
    /// it was restored) is found by name.
    pub fn detach_container(&mut self, ifname: &str) -> Result<(), DataplaneError> {
        let index = (self.containers.get(ifname).map(|a| a.ifindex))
            .or_else(|| if_nametoindex(ifname).ok());
        let mut errors: Vec<DataplaneError> =
            detach(&mut self.containers, PROG_FROM_CONTAINER, ifname)
                .err()
                .into_iter()
                .collect();
        if let Some(index) = index {
            errors.extend(self.remove_veth(index).err());
        }
        joined(errors)
    }

    /// The `ND_VETHS` entries, by ifindex.
    pub fn veths(&self) -> Result<Vec<(u32, VethInfo)>, DataplaneError> {
        self.veths
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("iterate", MAP_VETHS))
    }

    /// Removes the `ND_VETHS` entries of veths no attachment of this run holds (their
    /// endpoint went while the daemon was down, or a crash came between the entry and the
    /// attachment). Call it once the endpoints are restored.
    pub fn release_stale_veths(&mut self) -> Result<usize, DataplaneError> {
        let held: Vec<u32> = self.containers.values().map(|a| a.ifindex).collect();
        let mut released = 0;
        for (index, _) in self.veths()? {
            if !held.contains(&index) {
                tracing::info!(ifindex = index, "forgetting a veth no endpoint of ours has");
                self.remove_veth(index)?;
                released += 1;
            }
        }
        Ok(released)
    }

    pub(super) fn set_veth(&mut self, index: u32, veth: VethInfo) -> Result<(), DataplaneError> {
        let veth = VethInfo {
            _pad: [0; 2],
            ..veth
        };
        self.veths
            .insert(index, veth, 0)
            .map_err(map_err("insert into", MAP_VETHS))
    }

    fn remove_veth(&mut self, index: u32) -> Result<(), DataplaneError> {
        match self.veths.remove(&index) {
            Err(err) if !is_not_found(&err) => Err(map_err("remove from", MAP_VETHS)(err)),
            _ => Ok(()),
        }
    }
}

//! Wire-format checks against the upstream field numbers.

use prost::Message;
use talos_proto::common::Metadata;
use talos_proto::machine::{
    ApplyConfigurationRequest, MemInfo, Version, VersionInfo, VersionResponse,
    apply_configuration_request::Mode,
};
use talos_proto::prost_types::FileDescriptorSet;

#[test]
fn version_response_elements_start_with_metadata() {
    let resp = VersionResponse {
        messages: vec![Version {
            metadata: Some(Metadata {
                hostname: "node-1".into(),
                ..Default::default()
            }),
            version: Some(VersionInfo {
                tag: "v1.13.9".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let bytes = resp.encode_to_vec();
    // messages = field 1, wire type 2
    assert_eq!(bytes[0], 0x0a);
    assert_eq!(usize::from(bytes[1]), bytes.len() - 2);
    // the element's first field is metadata = field 1, wire type 2
    assert_eq!(bytes[2], 0x0a);
    // metadata.hostname = field 1, wire type 2
    assert_eq!(bytes[4], 0x0a);
    assert_eq!(&bytes[6..12], b"node-1");
    assert_eq!(VersionResponse::decode(bytes.as_slice()).unwrap(), resp);
}

#[test]
fn apply_configuration_request_field_numbers() {
    let bytes = [
        0x0a, 0x03, b'a', b'b', b'c', // field 1 data
        0x20, 0x04, // field 4 mode = TRY
        0x28, 0x01, // field 5 dry_run = true
    ];
    let req = ApplyConfigurationRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.data, b"abc");
    assert_eq!(req.mode(), Mode::Try);
    assert!(req.dry_run);
    assert_eq!(req.encode_to_vec(), bytes);
}

#[test]
fn meminfo_field_numbers() {
    let first = MemInfo {
        memtotal: 1,
        ..Default::default()
    };
    assert_eq!(first.encode_to_vec(), [0x08, 0x01]);

    let last = MemInfo {
        directmap1g: 7,
        ..Default::default()
    };
    // tag (48 << 3 | 0) = 384 = varint 0x80 0x03
    assert_eq!(last.encode_to_vec(), [0x80, 0x03, 0x07]);
}

const MEMINFO_ORDER: [&str; 48] = [
    "memtotal",
    "memfree",
    "memavailable",
    "buffers",
    "cached",
    "swapcached",
    "active",
    "inactive",
    "activeanon",
    "inactiveanon",
    "activefile",
    "inactivefile",
    "unevictable",
    "mlocked",
    "swaptotal",
    "swapfree",
    "dirty",
    "writeback",
    "anonpages",
    "mapped",
    "shmem",
    "slab",
    "sreclaimable",
    "sunreclaim",
    "kernelstack",
    "pagetables",
    "nfsunstable",
    "bounce",
    "writebacktmp",
    "commitlimit",
    "committedas",
    "vmalloctotal",
    "vmallocused",
    "vmallocchunk",
    "hardwarecorrupted",
    "anonhugepages",
    "shmemhugepages",
    "shmempmdmapped",
    "cmatotal",
    "cmafree",
    "hugepagestotal",
    "hugepagesfree",
    "hugepagesrsvd",
    "hugepagessurp",
    "hugepagesize",
    "directmap4k",
    "directmap2m",
    "directmap1g",
];

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(talos_proto::FILE_DESCRIPTOR_SET).unwrap()
}

#[test]
fn meminfo_descriptor_matches_upstream_order() {
    let fds = descriptor_set();
    let machine = fds.file.iter().find(|f| f.package() == "machine").unwrap();
    let meminfo = machine
        .message_type
        .iter()
        .find(|m| m.name() == "MemInfo")
        .unwrap();
    let fields: Vec<(i32, &str)> = meminfo
        .field
        .iter()
        .map(|f| (f.number(), f.name()))
        .collect();
    let expected: Vec<(i32, &str)> = (1..).zip(MEMINFO_ORDER).collect();
    assert_eq!(fields, expected);
    assert!(
        meminfo
            .field
            .iter()
            .all(|f| f.r#type() == talos_proto::prost_types::field_descriptor_proto::Type::Uint64)
    );
}

#[test]
fn machine_service_declares_required_rpcs() {
    let fds = descriptor_set();
    let machine = fds.file.iter().find(|f| f.package() == "machine").unwrap();
    let service = machine
        .service
        .iter()
        .find(|s| s.name() == "MachineService")
        .unwrap();
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for rpc in [
        "ApplyConfiguration",
        "Bootstrap",
        "CPUInfo",
        "Dmesg",
        "Events",
        "Hostname",
        "List",
        "LoadAvg",
        "Logs",
        "Memory",
        "Mounts",
        "Processes",
        "Read",
        "Reboot",
        "Reset",
        "Rollback",
        "ServiceList",
        "ServiceRestart",
        "ServiceStart",
        "ServiceStop",
        "Shutdown",
        "Upgrade",
        "Version",
        "GenerateClientConfiguration",
        "EtcdMemberList",
        "MetaWrite",
        "MetaDelete",
        "Containers",
        "Restart",
        "Stats",
        "Copy",
        "Kubeconfig",
    ] {
        assert!(methods.contains(&rpc), "MachineService lacks {rpc}");
    }
    let dmesg = service.method.iter().find(|m| m.name() == "Dmesg").unwrap();
    assert!(dmesg.server_streaming());
    assert_eq!(dmesg.output_type(), ".common.Data");
}

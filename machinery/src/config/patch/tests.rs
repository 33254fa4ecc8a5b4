use proptest::prelude::*;

use super::*;

fn yaml(text: &str) -> RawValue {
    codec::from_yaml(text).unwrap()
}

fn docs(text: &str) -> Vec<RawValue> {
    parse_documents(text).unwrap()
}

fn patched(base: &str, patch: &str) -> Result<Vec<RawValue>, PatchError> {
    let mut documents = docs(base);
    apply_patch(&mut documents, &Patch::parse(patch)?)?;
    Ok(documents)
}

const BASE: &str = "version: v1alpha1
machine:
  type: worker
  token: abcdef.0123456789abcdef
  certSANs: [a]
  network:
    hostname: one
    interfaces:
      - interface: eth0
        addresses: [10.0.0.2/24]
        mtu: 1500
      - deviceSelector:
          hardwareAddr: 'aa:*'
        dhcp: true
cluster:
  network:
    podSubnets: [10.244.0.0/16]
    serviceSubnets: [10.96.0.0/12]
  apiServer:
    auditPolicy:
      apiVersion: audit.k8s.io/v1
      kind: Policy
      rules:
        - level: Metadata
";

#[test]
fn parse_tells_json_patches_from_strategic_merges() {
    let json = Patch::parse(r#"[{"op": "add", "path": "/machine/a", "value": 1}]"#).unwrap();
    assert_eq!(
        json,
        Patch::JsonPatch(vec![JsonPatchOp {
            op: JsonPatchKind::Add,
            path: "/machine/a".into(),
            from: None,
            value: Some(RawValue::UInt(1)),
        }])
    );
    let yaml_ops =
        Patch::parse("- op: remove\n  path: /machine/x\n- op: move\n  from: /a\n  path: /b\n");
    assert!(matches!(yaml_ops, Ok(Patch::JsonPatch(ops)) if ops.len() == 2));
    assert_eq!(Patch::parse("[]").unwrap(), Patch::JsonPatch(Vec::new()));

    let merge = Patch::parse(
        "machine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: a\n",
    )
    .unwrap();
    assert!(matches!(merge, Patch::StrategicMerge(d) if d.len() == 2));
    assert_eq!(Patch::parse("").unwrap(), Patch::StrategicMerge(Vec::new()));
}

#[test]
fn parse_errors_are_precise() {
    let cases = [
        ("just text", "Patch document 1 is not a mapping"),
        ("a: 1\n---\n- x\n", "Patch document 2 is not a mapping"),
        (
            "- 1\n",
            "JSON patch operation 1: not an object with op and path",
        ),
        ("- path: /a\n", "JSON patch operation 1: missing \"op\""),
        (
            "- op: 3\n  path: /a\n",
            "JSON patch operation 1: \"op\" is not a string",
        ),
        (
            "- op: remove\n  path: /a\n- op: frob\n  path: /a\n",
            "JSON patch operation 2: unknown op \"frob\": expected add, remove, replace, move, copy or test",
        ),
        ("- op: remove\n", "JSON patch operation 1: missing \"path\""),
        (
            "- op: remove\n  path: 7\n",
            "JSON patch operation 1: \"path\" is not a string",
        ),
        (
            "- op: remove\n  path: a/b\n",
            "JSON patch operation 1: \"path\": JSON pointer \"a/b\" must start with /",
        ),
        (
            "- op: remove\n  path: /a~2\n",
            "JSON patch operation 1: \"path\": JSON pointer \"/a~2\" has a ~ not followed by 0 or 1",
        ),
        (
            "- op: add\n  path: /a\n",
            "JSON patch operation 1: add needs \"value\"",
        ),
        (
            "- op: replace\n  path: /a\n",
            "JSON patch operation 1: replace needs \"value\"",
        ),
        (
            "- op: test\n  path: /a\n",
            "JSON patch operation 1: test needs \"value\"",
        ),
        (
            "- op: copy\n  path: /a\n",
            "JSON patch operation 1: copy needs \"from\"",
        ),
        (
            "- op: move\n  path: /a\n",
            "JSON patch operation 1: move needs \"from\"",
        ),
    ];
    for (text, message) in cases {
        let err = Patch::parse(text).unwrap_err();
        assert_eq!(err.to_string(), message, "{text}");
    }
    let err = Patch::parse("a: [").unwrap_err();
    assert!(err.to_string().starts_with("Invalid patch: "), "{err}");
}

#[test]
fn maps_merge_lists_append_scalars_replace() {
    let out = patched(
        BASE,
        "machine:\n  certSANs: [b]\n  network:\n    hostname: two\n    nameservers: [1.1.1.1]\n",
    )
    .unwrap();
    let machine = out[0].get("machine").unwrap();
    assert_eq!(machine.get("certSANs").unwrap(), &yaml("[a, b]"));
    let network = machine.get("network").unwrap();
    assert_eq!(network.get("hostname").unwrap(), &RawValue::string("two"));
    assert_eq!(network.get("nameservers").unwrap(), &yaml("[1.1.1.1]"));
    assert_eq!(
        machine.get("token").unwrap(),
        &RawValue::string("abcdef.0123456789abcdef")
    );
}

#[test]
fn replace_fields_are_replaced_wholesale() {
    let out = patched(
        BASE,
        "cluster:\n  network:\n    podSubnets: [10.32.0.0/12]\n    serviceSubnets: [10.112.0.0/12]\n  apiServer:\n    auditPolicy:\n      rules:\n        - level: None\n",
    )
    .unwrap();
    let cluster = out[0].get("cluster").unwrap();
    let network = cluster.get("network").unwrap();
    assert_eq!(network.get("podSubnets").unwrap(), &yaml("[10.32.0.0/12]"));
    assert_eq!(
        network.get("serviceSubnets").unwrap(),
        &yaml("[10.112.0.0/12]")
    );
    assert_eq!(
        cluster
            .get("apiServer")
            .unwrap()
            .get("auditPolicy")
            .unwrap(),
        &yaml("rules:\n  - level: None\n")
    );
    // The same list name elsewhere still appends.
    let out = patched(
        "version: v1alpha1\nmachine:\n  podSubnets: [a]\n",
        "machine:\n  podSubnets: [b]\n",
    )
    .unwrap();
    assert_eq!(
        out[0].get("machine").unwrap().get("podSubnets").unwrap(),
        &yaml("[a, b]")
    );
}

#[test]
fn interfaces_merge_by_name_and_device_selector() {
    let out = patched(
        BASE,
        "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.3/24]\n        mtu: 9000\n      - deviceSelector:\n          hardwareAddr: 'aa:*'\n        mtu: 1400\n      - interface: eth1\n        dhcp: true\n",
    )
    .unwrap();
    let interfaces = out[0]
        .get("machine")
        .and_then(|m| m.get("network"))
        .and_then(|n| n.get("interfaces"))
        .unwrap();
    assert_eq!(
        interfaces,
        &yaml(
            "- interface: eth0\n  addresses: [10.0.0.2/24, 10.0.0.3/24]\n  mtu: 9000\n- deviceSelector:\n    hardwareAddr: 'aa:*'\n  dhcp: true\n  mtu: 1400\n- interface: eth1\n  dhcp: true\n"
        )
    );
}

#[test]
fn patch_delete_removes_keys_elements_and_documents() {
    let base = format!(
        "{BASE}---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: data\n---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: logs\n"
    );
    let out = patched(
        &base,
        "machine:\n  network:\n    hostname:\n      $patch: delete\n    interfaces:\n      - interface: eth0\n        $patch: delete\n  absent:\n    $patch: delete\n---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: data\n$patch: delete\n---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: never\n$patch: delete\n",
    )
    .unwrap();
    let network = out[0]
        .get("machine")
        .and_then(|m| m.get("network"))
        .unwrap();
    assert_eq!(network.get("hostname"), None);
    assert_eq!(
        network.get("interfaces").unwrap(),
        &yaml("- deviceSelector:\n    hardwareAddr: 'aa:*'\n  dhcp: true\n")
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].get("name").unwrap(), &RawValue::string("logs"));

    // In other lists the directive removes elements holding all the other fields.
    let out = patched(
        "version: v1alpha1\nmachine:\n  kernel:\n    modules:\n      - name: a\n      - name: b\n        parameters: [x=1]\n",
        "machine:\n  kernel:\n    modules:\n      - name: b\n        $patch: delete\n",
    )
    .unwrap();
    assert_eq!(
        out[0].get("machine").and_then(|m| m.get("kernel")).unwrap(),
        &yaml("modules:\n  - name: a\n")
    );
}

#[test]
fn documents_match_by_kind_and_name_or_are_appended() {
    let base = format!(
        "{BASE}---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: data\nprovisioning:\n  maxSize: 10GiB\n"
    );
    let out = patched(
        &base,
        "apiVersion: v1alpha1\nkind: UserVolumeConfig\nname: data\nprovisioning:\n  minSize: 1GiB\n---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: logs\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n$patch: merge\n",
    )
    .unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(
        out[1].get("provisioning").unwrap(),
        &yaml("maxSize: 10GiB\nminSize: 1GiB\n")
    );
    assert_eq!(out[2].get("name").unwrap(), &RawValue::string("logs"));
    // Directives never land in the result.
    assert_eq!(
        out[3],
        yaml("apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n")
    );
}

#[test]
fn json_patch_operations() {
    let out = patched(
        BASE,
        r#"
- op: add
  path: /machine/network/nameservers
  value: [1.1.1.1]
- op: add
  path: /machine/network/nameservers/0
  value: 9.9.9.9
- op: add
  path: /machine/network/nameservers/-
  value: 8.8.8.8
- op: replace
  path: /machine/network/hostname
  value: two
- op: remove
  path: /machine/network/interfaces/1
- op: copy
  from: /machine/network/hostname
  path: /machine/nodeLabels
- op: move
  from: /machine/certSANs
  path: /cluster/apiServer/certSANs
- op: test
  path: /machine/network/interfaces/0/mtu
  value: 1500
- op: add
  path: /machine/odd~1key~0
  value: x
"#,
    )
    .unwrap();
    let machine = out[0].get("machine").unwrap();
    let network = machine.get("network").unwrap();
    assert_eq!(
        network.get("nameservers").unwrap(),
        &yaml("[9.9.9.9, 1.1.1.1, 8.8.8.8]")
    );
    assert_eq!(network.get("hostname").unwrap(), &RawValue::string("two"));
    assert_eq!(machine.get("nodeLabels").unwrap(), &RawValue::string("two"));
    assert_eq!(
        network.get("interfaces").and_then(|i| match i {
            RawValue::Seq(items) => Some(items.len()),
            _ => None,
        }),
        Some(1)
    );
    assert_eq!(machine.get("certSANs"), None);
    assert_eq!(
        out[0]
            .get("cluster")
            .and_then(|c| c.get("apiServer"))
            .and_then(|a| a.get("certSANs")),
        Some(&yaml("[a]"))
    );
    assert_eq!(machine.get("odd/key~").unwrap(), &RawValue::string("x"));

    let out = patched(
        BASE,
        "- op: replace\n  path: ''\n  value: {version: v1alpha1}\n",
    )
    .unwrap();
    assert_eq!(out, [yaml("version: v1alpha1")]);
}

#[test]
fn json_patch_errors_name_the_operation_and_path() {
    let cases = [
        (
            "- op: remove\n  path: /machine/nope\n",
            "JSON patch operation 1 (remove \"/machine/nope\"): /machine/nope does not exist",
        ),
        (
            "- op: replace\n  path: /machine/network/interfaces/7/mtu\n  value: 1\n",
            "JSON patch operation 1 (replace \"/machine/network/interfaces/7/mtu\"): /machine/network/interfaces/7 does not exist",
        ),
        (
            "- op: add\n  path: /machine/certSANs/5\n  value: x\n",
            "JSON patch operation 1 (add \"/machine/certSANs/5\"): index \"5\" is out of range for /machine/certSANs (1 elements)",
        ),
        (
            "- op: add\n  path: /machine/type/x\n  value: x\n",
            "JSON patch operation 1 (add \"/machine/type/x\"): /machine/type is neither an object nor an array",
        ),
        (
            "- op: test\n  path: /machine/type\n  value: controlplane\n",
            "JSON patch operation 1 (test \"/machine/type\"): test failed: the value differs",
        ),
        (
            "- op: move\n  from: /machine\n  path: /machine/network/m\n",
            "JSON patch operation 1 (move \"/machine/network/m\"): cannot move /machine into its own child",
        ),
        (
            "- op: copy\n  from: /nope\n  path: /a\n",
            "JSON patch operation 1 (copy \"/a\"): /nope does not exist",
        ),
        (
            "- op: remove\n  path: ''\n",
            "JSON patch operation 1 (remove \"\"): cannot remove the whole document",
        ),
        (
            "- op: remove\n  path: /machine/certSANs/01\n",
            "JSON patch operation 1 (remove \"/machine/certSANs/01\"): /machine/certSANs/01 does not exist",
        ),
    ];
    for (patch, message) in cases {
        let err = patched(BASE, patch).unwrap_err();
        assert_eq!(err.to_string(), message, "{patch}");
    }
}

#[test]
fn json_patch_is_refused_for_multi_document_configs() {
    let base = format!("{BASE}---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n");
    let err = patched(&base, "- op: remove\n  path: /machine/network\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "JSON6902 patches are not supported for multi-document machine configuration"
    );
    // An empty JSON patch changes nothing, so it is allowed.
    assert_eq!(patched(&base, "[]").unwrap(), docs(&base));
}

#[test]
fn config_patch_decodes_the_result_strictly() {
    let config = Config::from_bytes(BASE.as_bytes()).unwrap();
    let patch = Patch::parse("machine:\n  network:\n    hostname: patched\n").unwrap();
    let out = config.patch(&[patch]).unwrap();
    assert_eq!(out.hostname(), Some("patched"));
    assert_eq!(out.interfaces().len(), 2);
    assert_eq!(config.patch(&[]).unwrap(), config);

    let typo = Patch::parse("machine:\n  network:\n    hostnam: x\n").unwrap();
    let err = config.patch(&[typo]).unwrap_err();
    assert!(
        err.to_string().starts_with("Patched machine config: Invalid machine config: machine.network.hostnam: unknown field `hostnam`"),
        "{err}"
    );
    let unknown = Patch::parse("apiVersion: v1alpha1\nkind: NopeConfig\n").unwrap();
    let err = config.patch(&[unknown]).unwrap_err();
    assert!(err.to_string().contains("\"NopeConfig\""), "{err}");
}

// Generated trees: a key's first letter fixes its type (m: map, l: list, s: scalar), so two trees
// never disagree on the shape at one path, which is when merges compose.
fn scalar() -> impl Strategy<Value = RawValue> {
    prop_oneof![
        any::<bool>().prop_map(RawValue::Bool),
        (0u64..1000).prop_map(RawValue::UInt),
        "[a-z]{0,6}".prop_map(RawValue::String),
    ]
}

fn tree(depth: u32) -> BoxedStrategy<RawValue> {
    let scalars = prop::collection::vec(("s[0-3]", scalar()), 0..4);
    let lists = prop::collection::vec(("l[0-2]", prop::collection::vec(scalar(), 0..3)), 0..3);
    let leaf = (scalars, lists)
        .prop_map(|(s, l)| {
            let mut entries: Vec<(RawValue, RawValue)> = Vec::new();
            for (k, v) in s {
                set(&mut entries, k, v);
            }
            for (k, v) in l {
                set(&mut entries, k, RawValue::Seq(v));
            }
            RawValue::Map(entries)
        })
        .boxed();
    if depth == 0 {
        return leaf;
    }
    (
        leaf,
        prop::collection::vec(("m[0-2]", tree(depth - 1)), 0..3),
    )
        .prop_map(|(mut map, children)| {
            if let RawValue::Map(entries) = &mut map {
                for (k, v) in children {
                    set(entries, k, v);
                }
            }
            map
        })
        .boxed()
}

fn set(entries: &mut Vec<(RawValue, RawValue)>, key: String, value: RawValue) {
    let key = RawValue::String(key);
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key, value)),
    }
}

fn merge_patch(documents: &[RawValue], patch: &RawValue) -> Vec<RawValue> {
    let mut out = documents.to_vec();
    merge_document(&mut out, patch);
    out
}

/// A path of map keys to a map in `tree`, and a key absent from that map.
fn absent_key_path(tree: &RawValue, choices: &[usize]) -> (Vec<String>, String) {
    let mut path = Vec::new();
    let mut node = tree;
    for &choice in choices {
        let RawValue::Map(entries) = node else { break };
        let maps: Vec<_> = entries
            .iter()
            .filter(|(_, v)| matches!(v, RawValue::Map(_)))
            .collect();
        if maps.is_empty() {
            break;
        }
        let (k, v) = maps[choice % maps.len()];
        path.push(k.key_text());
        node = v;
    }
    (path, "added".to_owned())
}

fn nested(path: &[String], leaf: RawValue) -> RawValue {
    path.iter().rev().fold(leaf, |inner, key| {
        RawValue::Map(vec![(RawValue::string(key.as_str()), inner)])
    })
}

proptest! {
    #[test]
    fn empty_patches_are_the_identity(base in tree(3)) {
        let documents = vec![base];
        let mut out = documents.clone();
        apply_patch(&mut out, &Patch::StrategicMerge(Vec::new())).unwrap();
        prop_assert_eq!(&out, &documents);
        apply_patch(&mut out, &Patch::StrategicMerge(vec![RawValue::Map(Vec::new())])).unwrap();
        prop_assert_eq!(&out, &documents);
        apply_patch(&mut out, &Patch::JsonPatch(Vec::new())).unwrap();
        prop_assert_eq!(&out, &documents);
    }

    #[test]
    fn strategic_patches_compose(base in tree(3), p1 in tree(3), p2 in tree(3)) {
        let documents = vec![base];
        let one_by_one = merge_patch(&merge_patch(&documents, &p1), &p2);
        let combined = merge_patch(&[p1], &p2);
        let at_once = merge_patch(&documents, &combined[0]);
        prop_assert_eq!(one_by_one, at_once);
    }

    #[test]
    fn json_patches_concatenate(base in tree(2), value in scalar(), key in "s[0-3]") {
        let documents = vec![base];
        let add = JsonPatchOp { op: JsonPatchKind::Add, path: format!("/{key}"), from: None, value: Some(value.clone()) };
        let test = JsonPatchOp { op: JsonPatchKind::Test, path: format!("/{key}"), from: None, value: Some(value) };
        let mut stepwise = documents.clone();
        apply_patch(&mut stepwise, &Patch::JsonPatch(vec![add.clone()])).unwrap();
        apply_patch(&mut stepwise, &Patch::JsonPatch(vec![test.clone()])).unwrap();
        let mut joined = documents;
        apply_patch(&mut joined, &Patch::JsonPatch(vec![add, test])).unwrap();
        prop_assert_eq!(stepwise, joined);
    }

    #[test]
    fn adding_then_deleting_a_key_restores_the_tree(
        base in tree(3),
        choices in prop::collection::vec(0usize..3, 0..3),
        value in tree(1),
    ) {
        let documents = vec![base];
        let (path, key) = absent_key_path(&documents[0], &choices);
        let mut leaf_path = path.clone();
        leaf_path.push(key.clone());

        let added = merge_patch(&documents, &nested(&leaf_path, value));
        prop_assert_ne!(&added, &documents);
        let delete = RawValue::Map(vec![(RawValue::string(DIRECTIVE), RawValue::string(DELETE))]);
        let restored = merge_patch(&added, &nested(&leaf_path, delete));
        prop_assert_eq!(&restored, &documents);

        // The same with JSON patch add and remove.
        let pointer = render_pointer(&leaf_path);
        let mut json = documents.clone();
        let ops = vec![
            JsonPatchOp { op: JsonPatchKind::Add, path: pointer.clone(), from: None, value: Some(RawValue::Bool(true)) },
            JsonPatchOp { op: JsonPatchKind::Remove, path: pointer, from: None, value: None },
        ];
        apply_patch(&mut json, &Patch::JsonPatch(ops)).unwrap();
        prop_assert_eq!(json, documents);
    }
}

//! Just enough DER reading and writing to move keys between PKCS#8, SEC1 and PKCS#1 and to
//! rewrite a certificate's subject.

use super::PkiError;

pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const SET: u8 = 0x31;
pub(super) const INTEGER: u8 = 0x02;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const NULL: u8 = 0x05;
pub(super) const OID: u8 = 0x06;
pub(super) const UTF8_STRING: u8 = 0x0c;
pub(super) const CONTEXT_0: u8 = 0xa0;
pub(super) const CONTEXT_1: u8 = 0xa1;

/// id-ecPublicKey (1.2.840.10045.2.1), content bytes only.
pub(super) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (1.2.840.10045.3.1.7).
pub(super) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// rsaEncryption (1.2.840.113549.1.1.1).
pub(super) const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-Ed25519 (1.3.101.112).
pub(super) const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// id-at-organizationName (2.5.4.10).
pub(super) const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// One tag-length-value element.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    /// The whole element, header included.
    pub raw: &'a [u8],
}

fn malformed(what: &str) -> PkiError {
    PkiError::MalformedDer(what.to_owned())
}

/// Reads one element from the front of `input`, returning it and the rest.
pub(super) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), PkiError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or_else(|| malformed("unexpected end"))?;
    let (&first, rest) = rest
        .split_first()
        .ok_or_else(|| malformed("missing length"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(malformed("bad length"));
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return Err(malformed("length past the end"));
    }
    let header = input.len() - rest.len();
    let tlv = Tlv {
        tag,
        content: &rest[..len],
        raw: &input[..header + len],
    };
    Ok((tlv, &rest[len..]))
}

/// Reads an element and checks its tag.
pub(super) fn expect(input: &[u8], tag: u8) -> Result<(Tlv<'_>, &[u8]), PkiError> {
    let (tlv, rest) = read(input)?;
    if tlv.tag != tag {
        return Err(malformed(&format!(
            "expected tag 0x{tag:02x}, found 0x{:02x}",
            tlv.tag
        )));
    }
    Ok((tlv, rest))
}

/// All elements of a constructed value's content.
pub(super) fn children(mut content: &[u8]) -> Result<Vec<Tlv<'_>>, PkiError> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tlv, rest) = read(content)?;
        out.push(tlv);
        content = rest;
    }
    Ok(out)
}

/// Encodes one element.
pub(super) fn write(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a constructed element from already-encoded parts.
pub(super) fn write_parts(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    write(tag, &parts.concat())
}

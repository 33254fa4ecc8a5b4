//! A line diff for `apply-config --dry-run`.

/// Lines only in `old` prefixed `-`, lines only in `new` prefixed `+`, in order (longest
/// common subsequence). "No changes" when equal.
pub fn lines(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        }
    }
    if out.is_empty() {
        "No changes.\n".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shows_removed_and_added_lines() {
        let d = super::lines("a\nb\nc\n", "a\nx\nc\nd\n");
        assert_eq!(d, "-b\n+x\n+d\n");
        assert_eq!(super::lines("same\n", "same\n"), "No changes.\n");
        assert_eq!(super::lines("", "new\n"), "+new\n");
    }
}

use openraft::entry::RaftEntry;
use openraft::vote::RaftLeaderId;

use super::*;
use crate::types::LeaderId;

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(
        <LeaderId as RaftLeaderId>::new(term, 1).to_committed(),
        index,
    )
}

fn payload(term: u64, index: u64) -> Vec<u8> {
    postcard::to_allocvec(&Entry::new_blank(lid(term, index))).unwrap()
}

/// One append per entry, so small segments roll between them.
fn append(wal: &Wal, term: u64, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        append_batch(wal, term, i..=i);
    }
}

/// Appends `range` as one batch and returns what the WAL said.
fn try_append(wal: &Wal, term: u64, range: std::ops::RangeInclusive<u64>) -> io::Result<()> {
    let payloads: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(term, i))).collect();
    let records: Vec<Record<'_>> = payloads
        .iter()
        .map(|(i, p)| Record {
            log_id: lid(term, *i),
            payload: p,
        })
        .collect();
    wal.append(&records)
}

fn append_batch(wal: &Wal, term: u64, range: std::ops::RangeInclusive<u64>) {
    try_append(wal, term, range).unwrap();
}

fn ids(wal: &Wal, lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let (entries, _) = wal.read(lo, hi, usize::MAX).unwrap();
    entries
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

fn files(dir: &Path) -> Vec<u64> {
    let mut n = segment_numbers(dir).unwrap();
    n.sort_unstable();
    n
}

/// Bytes the records of `range` take in a segment.
fn records_bytes(term: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
    range
        .map(|i| (HEADER_BYTES + payload(term, i).len()) as u64)
        .sum()
}

/// Segments of about four records each.
const SMALL: u64 = 100;

#[test]
fn entries_survive_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        append_batch(&wal, 1, 1..=5);
        append(&wal, 1, 6..=20);
        assert_eq!(wal.last_log_id(), Some(lid(1, 20)));
    }
    assert!(
        files(dir.path()).len() > 2,
        "rolled: {:?}",
        files(dir.path())
    );
    let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    assert_eq!(wal.last_log_id(), Some(lid(1, 20)));
    assert_eq!(wal.next_index(), 21);
    let got = ids(&wal, 0, 100);
    assert_eq!(got, (1..=20).map(|i| (1, i)).collect::<Vec<_>>());
    assert_eq!(ids(&wal, 7, 9), vec![(1, 7), (1, 8)]);
    // A gap is refused and changes nothing.
    let p = payload(1, 23);
    let err = wal
        .append(&[Record {
            log_id: lid(1, 23),
            payload: &p,
        }])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(wal.next_index(), 21);
}

#[test]
fn reads_stop_at_the_byte_budget_but_return_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), None).unwrap();
    append(&wal, 1, 1..=10);
    let (one, bytes) = wal.read(1, 11, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(bytes, payload(1, 1).len());
    let (all, _) = wal.read(1, 11, usize::MAX).unwrap();
    assert_eq!(all.len(), 10);
}

#[test]
fn a_torn_tail_is_cut_and_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), None).unwrap();
        append(&wal, 1, 1..=3);
    }
    let last = *files(dir.path()).last().unwrap();
    let path = segment_path(dir.path(), last);
    let good_len = records_bytes(1, 1..=3);
    // Half a record over the preallocated zeros: what a crash mid-append
    // leaves.
    let mut torn = Vec::new();
    encode_record(&mut torn, 4, &payload(1, 4));
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&torn[..torn.len() / 2], good_len).unwrap();
    drop(f);

    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(wal.last_log_id(), Some(lid(1, 3)));
    append(&wal, 2, 4..=5);
    drop(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(
        ids(&wal, 1, 10),
        vec![(1, 1), (1, 2), (1, 3), (2, 4), (2, 5)]
    );
}

#[test]
fn a_bad_record_before_the_last_segment_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        append(&wal, 1, 1..=12);
    }
    let first = files(dir.path())[0];
    let path = segment_path(dir.path(), first);
    let mut bytes = fs::read(&path).unwrap();
    let at = HEADER_BYTES + 2;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = Wal::open_with(dir.path(), None, SMALL).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn a_flipped_byte_fails_the_read_not_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), None).unwrap();
    append(&wal, 1, 1..=3);
    let path = segment_path(dir.path(), *files(dir.path()).last().unwrap());
    let mut bytes = fs::read(&path).unwrap();
    let second = HEADER_BYTES + payload(1, 1).len() + HEADER_BYTES;
    bytes[second] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = wal.read(1, 4, usize::MAX).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("index 2"), "{err}");
    assert_eq!(ids(&wal, 1, 2), vec![(1, 1)]);
}

#[test]
fn truncation_is_durable_and_later_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        append(&wal, 1, 1..=20);
        wal.truncate(6).unwrap();
        assert_eq!(wal.last_log_id(), Some(lid(1, 5)));
        assert_eq!(wal.read(6, 30, usize::MAX).unwrap().0.len(), 0);
        append(&wal, 2, 6..=7);
        // Truncating past the end changes nothing.
        wal.truncate(50).unwrap();
    }
    let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    let mut want: Vec<(u64, u64)> = (1..=5).map(|i| (1, i)).collect();
    want.extend([(2, 6), (2, 7)]);
    assert_eq!(ids(&wal, 0, 100), want);
    wal.truncate(0).unwrap();
    assert_eq!(wal.last_log_id(), None);
    assert!(ids(&wal, 0, 100).is_empty());
}

#[test]
fn purge_deletes_whole_segments_and_reopens_after_the_purged_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        append(&wal, 1, 1..=20);
        let before = files(dir.path()).len();
        wal.purge(10).unwrap();
        assert!(files(dir.path()).len() < before);
        assert_eq!(ids(&wal, 0, 12), vec![(1, 11)]);
        assert_eq!(wal.first_index(), 11);
    }
    let wal = Wal::open_with(dir.path(), Some(lid(1, 10)), SMALL).unwrap();
    assert_eq!(
        ids(&wal, 0, 100),
        (11..=20).map(|i| (1, i)).collect::<Vec<_>>()
    );
    // Purging past the last entry empties the log; appends resume after
    // the purged index, in a segment of their own.
    wal.purge(30).unwrap();
    assert_eq!(wal.last_log_id(), None);
    append(&wal, 3, 31..=32);
    drop(wal);
    let wal = Wal::open_with(dir.path(), Some(lid(1, 30)), SMALL).unwrap();
    assert_eq!(ids(&wal, 0, 100), vec![(3, 31), (3, 32)]);
}

#[test]
fn a_purge_not_yet_applied_to_the_files_is_applied_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        append(&wal, 1, 1..=20);
    }
    // The purged id was saved, then the process died before deleting.
    let wal = Wal::open_with(dir.path(), Some(lid(1, 12)), SMALL).unwrap();
    assert_eq!(wal.first_index(), 13);
    assert_eq!(ids(&wal, 0, 14), vec![(1, 13)]);
    // A purged id past every entry leaves an empty log.
    drop(wal);
    let wal = Wal::open_with(dir.path(), Some(lid(1, 25)), SMALL).unwrap();
    assert_eq!(wal.last_log_id(), None);
    assert_eq!(wal.next_index(), 26);
}

#[test]
fn appends_overwrite_preallocated_zeros_that_reopen_as_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 0);
    {
        let wal = Wal::open(dir.path(), None).unwrap();
        append(&wal, 1, 1..=3);
        let len = fs::metadata(&path).unwrap().len();
        assert!(
            len >= records_bytes(1, 1..=3) + PREALLOCATE_BYTES,
            "the first append wrote zeros ahead: {len}"
        );
        append(&wal, 1, 4..=6);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            len,
            "later appends only overwrite the zeros"
        );
    }
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(wal.last_log_id(), Some(lid(1, 6)));
    // The next record goes right after the last one, not at the file's end.
    append(&wal, 2, 7..=7);
    drop(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(
        ids(&wal, 1, 10),
        (1..=6).map(|i| (1, i)).chain([(2, 7)]).collect::<Vec<_>>()
    );
    let bytes = fs::read(&path).unwrap();
    let end = records_bytes(1, 1..=6) + records_bytes(2, 7..=7);
    assert!(bytes[end as usize..].iter().all(|b| *b == 0));
}

#[test]
fn an_append_past_the_zeros_writes_the_next_ones_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 0);
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.preallocate_bytes = 4096;
    let mut lens = Vec::new();
    for i in 1..=1500 {
        append(&wal, 1, i..=i);
        lens.push(fs::metadata(&path).unwrap().len());
    }
    lens.dedup();
    assert!(lens.len() > 2, "the file grew in steps: {lens:?}");
    for len in &lens {
        assert_eq!(len % 4096, 0, "{lens:?}");
    }
    let written = records_bytes(1, 1..=1500);
    assert!(*lens.last().unwrap() > written, "zeros follow the records");
    drop(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(ids(&wal, 1, 2000).len(), 1500);
}

#[test]
fn truncation_drops_the_zeros_and_appends_resume_at_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 0);
    let wal = Wal::open(dir.path(), None).unwrap();
    append(&wal, 1, 1..=5);
    wal.truncate(4).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), records_bytes(1, 1..=3));
    append(&wal, 2, 4..=4);
    drop(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(ids(&wal, 1, 10), vec![(1, 1), (1, 2), (1, 3), (2, 4)]);
}

#[test]
fn a_rolled_segment_ending_in_zeros_is_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
        append(&wal, 1, 1..=12);
    }
    let first = segment_path(dir.path(), files(dir.path())[0]);
    let len = fs::metadata(&first).unwrap().len();
    assert!(len > SMALL + 4096, "kept its zeros: {len}");
    let wal = Wal::open_with(dir.path(), None, SMALL).unwrap();
    assert_eq!(
        ids(&wal, 1, 20),
        (1..=12).map(|i| (1, i)).collect::<Vec<_>>()
    );
}

#[test]
fn zeros_are_laid_ahead_when_asked_and_only_when_running_low() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 0);
    let mut wal = Wal::open(dir.path(), None).unwrap();
    wal.preallocate_bytes = 8192;
    append(&wal, 1, 1..=3);
    let first = fs::metadata(&path).unwrap().len();
    wal.preallocate_ahead().unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        first,
        "more than half the zeros are left"
    );
    let mut i = 4;
    while first - records_bytes(1, 1..=i - 1) >= 4096 {
        append(&wal, 1, i..=i);
        i += 1;
    }
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        first,
        "still the same zeros"
    );
    wal.preallocate_ahead().unwrap();
    let grown = fs::metadata(&path).unwrap().len();
    assert!(grown > first, "{grown} > {first}");
    let bytes = fs::read(&path).unwrap();
    let end = records_bytes(1, 1..=i - 1) as usize;
    assert!(bytes[end..].iter().all(|b| *b == 0));
    drop(wal);
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(ids(&wal, 1, 1000).len() as u64, i - 1);
}

#[test]
fn after_a_failed_write_nothing_more_is_written_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), None).unwrap();
    append(&wal, 1, 1..=3);
    // The disk fails: writes to the active segment error out (a handle
    // opened read-only stands in for the failing device).
    let path = segment_path(dir.path(), wal.lock_active().number);
    let writable = wal.lock_active().file.clone();
    wal.lock_active().file = Arc::new(File::open(&path).unwrap());
    let err = try_append(&wal, 1, 4..=5).unwrap_err();
    assert!(err.to_string().contains("append"), "{err}");
    // The disk works again, but a failed sync may have lost pages a later
    // sync would not report: every change is refused from now on.
    wal.lock_active().file = writable;
    for refused in [
        try_append(&wal, 1, 4..=5).unwrap_err(),
        wal.preallocate_ahead().unwrap_err(),
        wal.truncate(2).unwrap_err(),
        wal.purge(1).unwrap_err(),
    ] {
        assert!(
            refused.to_string().contains("an earlier write failed"),
            "{refused}"
        );
    }
    assert_eq!(ids(&wal, 1, 4), [(1, 1), (1, 2), (1, 3)], "reads go on");
    drop(wal);
    // Opened again, it holds what was synced and takes appends.
    let wal = Wal::open(dir.path(), None).unwrap();
    assert_eq!(ids(&wal, 1, 4), [(1, 1), (1, 2), (1, 3)]);
    append(&wal, 1, 4..=5);
    assert_eq!(ids(&wal, 4, 6), [(1, 4), (1, 5)]);
}

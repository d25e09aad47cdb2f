//! The network lab on its own (root only; skips with a message otherwise):
//! namespaces and bridge are created and removed, partitions install and
//! remove blackhole routes, leftovers of dead runs are swept and nothing
//! else is touched.

use cairn_chaos::netns::{run_bounded, stem_for_pid, sweep_leftovers, NetLab, PREFIX};

fn namespaces() -> String {
    run_bounded("ip", &["netns", "list"]).unwrap_or_default()
}

fn links() -> String {
    run_bounded("ip", &["-o", "link", "show"]).unwrap_or_default()
}

macro_rules! require_root {
    () => {
        if let Err(why) = NetLab::precondition() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

#[test]
fn lab_builds_partitions_heals_and_cleans_up() {
    require_root!();
    let mut lab = match NetLab::create(3) {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("SKIPPED: cannot build a lab here: {why}");
            return;
        }
    };
    let ns: Vec<String> = (0..3).map(|i| lab.namespace(i).to_string()).collect();
    assert!(ns.iter().all(|n| n.starts_with(PREFIX)));
    assert!(ns.iter().all(|n| namespaces().contains(n.as_str())));
    let routes = |i: usize| run_bounded("ip", &["-n", &ns[i], "route", "show"]).unwrap();
    lab.split(&[0], &[1, 2]).unwrap();
    assert_eq!(lab.cut_pairs(), vec![(0, 1), (0, 2)]);
    let r0 = routes(0);
    assert!(
        r0.contains(&format!("blackhole {}", lab.member_addr(1))),
        "{r0}"
    );
    assert!(
        r0.contains(&format!("blackhole {}", lab.member_addr(2))),
        "{r0}"
    );
    assert!(routes(1).contains(&format!("blackhole {}", lab.member_addr(0))));
    assert!(!routes(1).contains(&format!("blackhole {}", lab.member_addr(2))));
    lab.heal().unwrap();
    assert!(lab.cut_pairs().is_empty());
    assert!(!routes(0).contains("blackhole"));
    drop(lab);
    let (after_ns, after_links) = (namespaces(), links());
    for n in &ns {
        assert!(!after_ns.contains(n.as_str()), "{n} left behind");
    }
    let stem = ns[0].trim_end_matches("-n0");
    assert!(
        !after_links.contains(stem),
        "links left behind: {after_links}"
    );
}

#[test]
fn leftovers_of_dead_runs_are_swept_and_others_kept() {
    require_root!();
    // 2hwcf (base 36) = 4194303 = the largest possible pid: not running.
    let dead_ns = format!("{PREFIX}2hwcf-0-n0");
    let dead_link = format!("{PREFIX}2hwcf-0-b");
    // Not ours (no prefix), and ours but of a live process (this one).
    let foreign = "cchx-test-keep".to_string();
    let alive = format!("{}-zz-b", stem_for_pid(std::process::id()));
    if run_bounded("ip", &["netns", "add", &dead_ns]).is_err()
        || run_bounded("ip", &["link", "add", &dead_link, "type", "bridge"]).is_err()
    {
        eprintln!("SKIPPED: cannot create namespaces or links here");
        let _ = run_bounded("ip", &["netns", "del", &dead_ns]);
        return;
    }
    run_bounded("ip", &["link", "add", &foreign, "type", "bridge"]).unwrap();
    run_bounded("ip", &["link", "add", &alive, "type", "bridge"]).unwrap();
    // (Another lab being built concurrently may sweep them first.)
    sweep_leftovers();
    let (ns, ls) = (namespaces(), links());
    let _ = run_bounded("ip", &["link", "del", &foreign]);
    let _ = run_bounded("ip", &["link", "del", &alive]);
    assert!(!ns.contains(&dead_ns), "{ns}");
    assert!(!ls.contains(&dead_link), "{ls}");
    assert!(
        ls.contains(&foreign),
        "a link without our prefix was touched"
    );
    assert!(ls.contains(&alive), "a live run's link was touched");
}

//! Unit tests of the cleaning rules, on whole articles and on single helpers.

use super::inline::agency_prefix_len;
use super::lines::{contains_numeric_date, is_counter};
use super::*;

fn reasons(c: &Cleaned) -> Vec<(&str, RemovalReason)> {
    c.removed
        .iter()
        .map(|r| (r.text.as_str(), r.reason))
        .collect()
}

#[test]
fn glued_duplicates() {
    assert_eq!(
        degl("Việt NamViệt Nam10/01/2024"),
        (
            "Việt Nam10/01/2024".to_string(),
            vec!["Việt Nam".to_string()]
        )
    );
    assert_eq!(degl("McDonald und iPhone").0, "McDonald und iPhone");
    assert_eq!(degl("BerlinBerlin").0, "Berlin");
    // Too short to be sure.
    assert_eq!(degl("TikTok").0, "TikTok");
}

#[test]
fn dates_in_lines() {
    assert!(contains_numeric_date("Việt Nam10/01/2024"));
    assert!(contains_numeric_date("2024-01-10 08:00"));
    assert!(contains_numeric_date("Berlin, 22.05.2023"));
    assert!(!contains_numeric_date("3/6 Cluster"));
    assert!(!contains_numeric_date("18/18 ключевых задач"));
    assert!(!contains_numeric_date("Version 1.2.3"));
}

#[test]
fn counters() {
    assert!(is_counter("Kommentar (0)"));
    assert!(is_counter("Комментарий (12)"));
    assert!(is_counter("Komentáře: 3"));
    assert!(!is_counter("Artikel 5"));
    assert!(!is_counter("(0)"));
    assert!(!is_counter("Die Zahl der Toten stieg auf (12)"));
}

#[test]
fn agency_prefixes() {
    let cut = |t: &str| agency_prefix_len(t).map(|l| t[..l].trim().to_string());
    assert_eq!(cut("(QNO) - Сегодня днем").as_deref(), Some("(QNO) -"));
    assert_eq!(
        cut("BERLIN (dpa) – Die Regierung").as_deref(),
        Some("BERLIN (dpa) –")
    );
    assert_eq!(
        cut("Praha 5. května (ČTK) - Vláda dnes").as_deref(),
        Some("Praha 5. května (ČTK) -")
    );
    assert_eq!(cut("HANOI – The government").as_deref(), Some("HANOI –"));
    assert_eq!(cut("Die Partei (SPD) - so heißt es - will"), None);
    assert_eq!(cut("Er sagte (laut Bericht) - nichts"), None);
    assert_eq!(cut("NATO-Gipfel beginnt heute."), None);
}

#[test]
fn wrapped_text_is_joined() {
    let text = "Der Bundestag hat am Donnerstag über das neue Gesetz\n\
                abgestimmt und es mit großer Mehrheit angenommen, wie\n\
                die Präsidentin mitteilte. Die Opposition stimmte dagegen.\n\
                \n\
                Zweiter Absatz.";
    let c = clean(None, text);
    assert_eq!(c.paragraphs.len(), 2, "{:?}", c.paragraphs);
    assert!(c.paragraphs[0].starts_with("Der Bundestag"));
    assert!(c.paragraphs[0].ends_with("stimmte dagegen."));
    assert!(c.removed.is_empty(), "{:?}", c.removed);
}

#[test]
fn short_sentences_stay_fragments_go() {
    let c = clean(
        Some("Titel"),
        "Er kam.\nDelegaten der Konferenz\nSie ging wieder nach Hause.\n",
    );
    assert_eq!(c.paragraphs, vec!["Er kam.", "Sie ging wieder nach Hause."]);
    assert_eq!(
        reasons(&c),
        vec![("Delegaten der Konferenz", RemovalReason::ShortFragment)]
    );
}

#[test]
fn title_repeated_in_text_goes() {
    let c = clean(
        Some("Großer Brand in Köln"),
        "Großer Brand in Köln\nEs brannte.",
    );
    assert_eq!(c.paragraphs, vec!["Es brannte."]);
    assert_eq!(c.removed[0].reason, RemovalReason::Duplicate);
}

#[test]
fn inline_cuts() {
    let c = clean(
        None,
        "Die Stadt feierte. [Anzeige_2] Viele kamen (Foto: dpa) zum Fest. Foto: Max Muster",
    );
    assert_eq!(
        c.paragraphs,
        vec!["Die Stadt feierte. Viele kamen zum Fest."]
    );
    let r = reasons(&c);
    assert!(r.contains(&("[Anzeige_2]", RemovalReason::Placeholder)));
    assert!(r.contains(&("(Foto: dpa)", RemovalReason::Credit)));
    assert!(r.contains(&("Foto: Max Muster", RemovalReason::Credit)));
}

#[test]
fn nothing_left_is_fine() {
    let c = clean(Some("T"), "Kommentar (0)\n[Anzeige]\n\nQuelle\n");
    assert!(c.paragraphs.is_empty());
    assert_eq!(c.removed.len(), 3);
    let c = clean(None, "");
    assert!(c.paragraphs.is_empty() && c.removed.is_empty());
}

//! Furniture removal on the sample pages in `tests/fixtures/text/` (copies of `seeds/`) and on
//! hand-written pages from other sites: what goes, with which reason, and what stays.

#[path = "support/text_seeds.rs"]
mod text_seeds;

use std::collections::HashSet;

use text_seeds::{load_seeds, seed};
use tidings::text::article::Article;
use tidings::text::clean::{clean, Cleaned, RemovalReason};
use tidings::text::prepare::{prepare, Prepared};
use tidings::text::segment::split_sentences;

use RemovalReason::*;

/// The reason `line` (whole, trimmed) was removed with, if it was.
fn reason_of(c: &Cleaned, text: &str) -> Option<RemovalReason> {
    c.removed
        .iter()
        .find(|r| r.text.trim() == text)
        .map(|r| r.reason)
}

fn assert_removed(c: &Cleaned, text: &str, reason: RemovalReason) {
    assert_eq!(
        reason_of(c, text),
        Some(reason),
        "{text:?} should be removed as {reason}; removed: {:#?}",
        c.removed
    );
    assert!(
        !c.paragraphs.iter().any(|p| p.contains(text)),
        "{text:?} is still in a paragraph"
    );
}

fn assert_kept(c: &Cleaned, sentence: &str) {
    assert!(
        c.paragraphs.iter().any(|p| p.contains(sentence)),
        "{sentence:?} should be kept; paragraphs: {:#?}",
        c.paragraphs
    );
}

fn all_sentences(p: &Prepared) -> Vec<&str> {
    p.paragraphs
        .iter()
        .flat_map(|para| para.sentences.iter().map(|s| s.text.as_str()))
        .collect()
}

fn cleaned(a: &Article) -> Cleaned {
    clean(a.title.as_deref(), &a.text)
}

// ---------------------------------------------------------------------------------------------
// Seed pages

#[test]
fn seeds_load_in_name_order_with_titles() {
    let articles = load_seeds();
    let ids: Vec<&str> = articles.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "000_074045f7313b7a51",
            "001_4ac240e21ab2c0f1",
            "002_ff3168523ab1285c",
            "003_66cdfc1598f08d3e",
            "004_295ac4fd6d2add92"
        ]
    );
    assert_eq!(
        articles[0].title.as_deref(),
        Some("Die Vorsitzenden des Stadtparteikomitees sprechen auf der Sitzung")
    );
    assert!(articles[0].text.starts_with("Am Nachmittag des 22. Mai"));
    assert!(articles.iter().all(|a| a.lang.is_none()));
}

#[test]
fn seed_000_german_furniture_and_ordinal_dates() {
    let a = seed("000");
    let c = cleaned(&a);
    assert_removed(&c, "[Anzeige_2]", Placeholder);
    assert_removed(&c, "Quellenlink", Source);
    assert_removed(&c, "Kommentar (0)", Counter);
    assert_eq!(c.removed.len(), 3, "{:#?}", c.removed);
    assert_eq!(c.paragraphs.len(), 5);
    assert_kept(
        &c,
        "An der Sitzung nahmen die Vorsitzenden des Stadtparteiausschusses",
    );
    assert_kept(
        &c,
        "Der Wettbewerb für herausragende Parteizellensekretäre auf Stadtebene 2023 soll wie geplant am 21. Juni 2023 stattfinden.",
    );

    let p = prepare(&a);
    let sentences = all_sentences(&p);
    let may = sentences
        .iter()
        .find(|s| s.contains("22. Mai"))
        .expect("a sentence with 22. Mai");
    assert!(may.starts_with("Am Nachmittag des 22. Mai traf sich der Lenkungsausschuss"));
    assert!(
        may.ends_with("zu verbreiten und zu vereinheitlichen."),
        "{may}"
    );
    assert!(sentences.contains(&"An der Sitzung nahmen die Vorsitzenden des Stadtparteiausschusses, Mitglieder des Lenkungsausschusses, der Jury und von Unterstützergruppen teil."));
    assert!(sentences.iter().any(
        |s| s.starts_with("Laut dem vorläufigen") && s.ends_with("12. Juni 2023 abschließen.")
    ));
    // `usw.` before a lowercase word does not end the sentence.
    assert!(sentences.iter().any(
        |s| s.contains("Antworten usw. zu benennen.") && s.starts_with("Gleichzeitig einigten")
    ));
    assert_eq!(sentences.len(), 9);
}

#[test]
fn seed_001_russian_credit_byline_source_counter() {
    let c = cleaned(&seed("001"));
    assert_removed(&c, "Фото: HT", Credit);
    assert_removed(&c, "Ха Чанг", ShortFragment);
    assert_removed(&c, "Источник", Source);
    assert_removed(&c, "Комментарий (0)", Counter);
    assert_eq!(c.removed.len(), 4, "{:#?}", c.removed);
    // The caption stays as a sentence, without its credit.
    assert!(c.paragraphs.contains(&"Руководители подразделений блока «Соревнование» партийных органов полны решимости успешно выполнить задачи по соревнованию в 2024 году.".to_string()));
    assert_kept(&c, "политическая школа «Ле Дуань».");
    assert_kept(
        &c,
        "а также эффективно реализовывать мероприятия, организованные блоком соревнований партийных агентств.",
    );
    assert_eq!(c.paragraphs.len(), 7);
}

#[test]
fn seed_002_russian_dateline_prefix_captions_and_related_block() {
    let a = seed("002");
    let c = cleaned(&a);
    assert_removed(&c, "Việt NamViệt Nam10/01/2024", Dateline);
    assert_removed(&c, "(QNO) -", AgencyPrefix);
    assert_removed(&c, "Источник", Source);
    assert_removed(&c, "Комментарий (0)", Counter);
    assert_removed(&c, "No data", ShortFragment);
    for heading in ["Та же тема", "Та же категория", "Тот же автор"]
    {
        assert_removed(&c, heading, RelatedLinks);
    }
    for headline in [
        "Французский отец привозит дочь во Вьетнам, чтобы найти мать: невероятные результаты ДНК через 1 день",
        "Кантхо в моих глазах",
        "17-секундное видео с Манг Ден настолько красивое, что пользователи сети подозревают, что оно было отредактировано",
        "Красавица прайм-тайма произвела фурор благодаря своей роли ученицы 10-го класса, которая слишком хороша собой, несмотря на свой рост всего 1 м 53 см.",
        "No videos available",
        "Фигура",
    ] {
        assert_removed(&c, headline, RelatedLinks);
    }

    // Captions printed twice: one copy stays, without the credit; the credit is recorded.
    for caption in [
        "Место проведения конференции сегодня днем 10 января.",
        "На конференции председательствовали заместитель секретаря провинциального комитета партии Ле Ван Зунг и глава организационного комитета провинциального комитета партии Нгуен Чин.",
    ] {
        let copies = c.paragraphs.iter().filter(|p| *p == caption).count();
        assert_eq!(copies, 1, "{caption}");
    }
    assert_eq!(
        c.removed.iter().filter(|r| r.reason == Duplicate).count(),
        3
    );
    assert_eq!(
        c.removed
            .iter()
            .filter(|r| r.reason == Credit && r.text == "Фото: Н.Д.")
            .count(),
        3
    );
    assert!(c.paragraphs.iter().all(|p| !p.contains("Фото:")));

    // The body: the prefix is gone, the first paragraph starts with the news.
    assert!(c.paragraphs[0].starts_with("Сегодня днем, 10 января, Оргкомитет"));
    assert_kept(&c, "достигнув 113,34% от резолюции (1800 членов партии).");
    assert_kept(&c, "- подчеркнул постоянный заместитель секретаря провинциального комитета партии Ле Ван Зунг.");
    assert_eq!(c.paragraphs.len(), 14);

    let p = prepare(&a);
    let sentences = all_sentences(&p);
    assert!(sentences.contains(&"В 2023 году вся провинция приняла 2041 члена партии, достигнув 113,34% от резолюции (1800 членов партии)."));
    assert!(sentences
        .iter()
        .any(|s| s.starts_with("Модель партийных ячеек и ячеек \"4 good\"")));
    // `г-на` and `гг.,` do not end sentences.
    assert!(sentences
        .iter()
        .any(|s| s.contains("семестр 2025 - 2030 гг., в котором примут участие 53 товарища.")));
}

#[test]
fn seed_003_czech_source_and_counter() {
    let a = seed("003");
    let c = cleaned(&a);
    assert_removed(
        &c,
        "LAN NGUYENZdroj: https://baohaiduong.vn/tap-trung-trien-khai-phong-trao-thi-dua-dan-van-kheo-viec-gi-cung-thanh-cong-396302.html",
        Source,
    );
    assert_removed(&c, "Komentář (0)", Counter);
    assert_eq!(c.removed.len(), 2, "{:#?}", c.removed);
    assert_eq!(c.paragraphs.len(), 5);
    assert_kept(
        &c,
        "s tématem „Kvalifikovaná masová mobilizace – Všechno je úspěšné“.",
    );
    assert_kept(&c, "období 2024–2030“...");

    let p = prepare(&a);
    let sentences = all_sentences(&p);
    // `č. 3.` is "number 3" and the sentence ends after it.
    assert!(sentences
        .iter()
        .any(|s| s.starts_with("Stranické výbory") && s.ends_with("škod způsobených bouří č. 3.")));
    assert!(sentences
        .iter()
        .any(|s| s.starts_with("Zaměřily se na mobilizaci lidí")));
    // The title (a whole sentence) keeps `23. října` inside.
    let title = a.title.as_deref().unwrap_or_default();
    assert_eq!(split_sentences(title, "cs").len(), 1);
}

#[test]
fn seed_004_russian_bylines_caption_and_related_block() {
    let a = seed("004");
    let c = cleaned(&a);
    assert_removed(&c, "Việt NamViệt Nam08/09/2023", Dateline);
    assert_removed(&c, "подсолнечник", ShortFragment);
    assert_removed(&c, "Хонг Джанг - Дук Лам", ShortFragment);
    assert_removed(&c, "Источник", Source);
    assert_removed(&c, "Комментарий (0)", Counter);
    for line in [
        "Та же тема",
        "Та же категория",
        "Вьетнам призывает к мирному разрешению конфликта на Украине",
        "Развитие общественного туризма в Хазянге: когда внутренняя культура действует как экономический «рычаг»",
        "Французский отец привозит дочь во Вьетнам, чтобы найти мать: невероятные результаты ДНК через 1 день",
        "Кантхо в моих глазах",
        "Тот же автор",
        "Министерство - Филиал",
        "Продукт",
    ] {
        assert_removed(&c, line, RelatedLinks);
    }
    // A short caption that is a sentence stays.
    assert!(c.paragraphs.contains(&"Делегаты конференции.".to_string()));
    assert!(c.paragraphs[0].starts_with("8 сентября партийный комитет района Хоалы"));
    assert_kept(&c, "на период 2021–2023 гг.");
    assert_eq!(c.paragraphs.len(), 11);

    let p = prepare(&a);
    let sentences = all_sentences(&p);
    // `гг.` before a lowercase word is inside the sentence.
    assert!(sentences
        .iter()
        .any(|s| s.starts_with("В период 2021–2023 гг. во всем округе реализовано 337 моделей")));
    assert_eq!(sentences.len(), 11);
}

#[test]
fn seed_languages_are_detected() {
    let expected = [
        ("000", "de"),
        ("001", "ru"),
        ("002", "ru"),
        ("003", "cs"),
        ("004", "ru"),
    ];
    for (prefix, lang) in expected {
        let p = prepare(&seed(prefix));
        assert_eq!(p.lang.as_deref(), Some(lang), "{prefix}");
        assert!(!p.lang_declared);
        let d = p.detected.as_ref().expect("detected");
        assert_eq!(d.lang, lang);
        assert!(d.confidence >= 0.9, "{prefix}: {}", d.confidence);
        // Every paragraph is in the article's language (no paragraph is confidently other).
        for para in &p.paragraphs {
            assert_eq!(para.lang.as_deref(), Some(lang), "{prefix}: {}", para.text);
        }
    }
}

#[test]
fn no_furniture_left_in_any_seed() {
    let furniture = [
        "[Anzeige",
        "Quellenlink",
        "Kommentar (",
        "Комментарий (",
        "Komentář (",
        "No data",
        "No videos",
        "Та же тема",
        "Тот же автор",
        "Việt Nam",
        "(QNO)",
        "Фото:",
        "Zdroj:",
        "https://",
    ];
    for a in load_seeds() {
        let p = prepare(&a);
        assert!(!p.paragraphs.is_empty(), "{}", a.id);
        for para in &p.paragraphs {
            for f in furniture {
                assert!(
                    !para.text.contains(f),
                    "{}: {f:?} left in {:?}",
                    a.id,
                    para.text
                );
            }
            // Every kept paragraph ends like a sentence.
            let last = para.text.trim_end_matches(['»', '“', '"', ')']);
            assert!(
                last.ends_with(['.', '!', '?', '…']),
                "{}: {:?}",
                a.id,
                para.text
            );
        }
    }
}

#[test]
fn related_block_shared_by_two_pages_is_removed_from_both() {
    let (a, b) = (seed("002"), seed("004"));
    let lines = |t: &str| -> HashSet<String> {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let shared: HashSet<String> = lines(&a.text)
        .intersection(&lines(&b.text))
        .cloned()
        .collect();
    // The pages share their whole tail: source, counter, navigation and two headlines.
    assert!(shared.contains("Кантхо в моих глазах"));
    assert!(shared.len() >= 8, "{shared:?}");
    for page in [&a, &b] {
        let c = cleaned(page);
        for line in &shared {
            assert!(
                reason_of(&c, line).is_some(),
                "{}: shared line {line:?} was not removed",
                page.id
            );
            assert!(!c.paragraphs.iter().any(|p| p.contains(line.as_str())));
        }
    }
    // What is left of the two pages has nothing in common.
    let (ca, cb) = (cleaned(&a), cleaned(&b));
    let pa: HashSet<&String> = ca.paragraphs.iter().collect();
    assert!(cb.paragraphs.iter().all(|p| !pa.contains(p)));
}

#[test]
fn structural_link_list_without_a_known_heading() {
    // Two German pages share a list of other headlines under a heading no lexicon knows.
    let list = "Aus der Region\n\
                Neue Radwege für die Innenstadt geplant\n\
                Bürgermeister eröffnet das Stadtfest am Wochenende\n\
                Feuerwehr löscht Brand in einer Lagerhalle\n";
    let page_a = format!(
        "Der Stadtrat hat am Dienstag den Haushalt beschlossen. Die Opposition stimmte dagegen.\n\
         Die Ausgaben steigen um drei Prozent.\n\n{list}"
    );
    let page_b = format!(
        "Im Zoo ist ein Elefant geboren worden. Mutter und Kind sind wohlauf.\n\
         Besucher können das Jungtier ab Mai sehen.\n\n{list}\nMehr Videos"
    );
    for page in [&page_a, &page_b] {
        let c = clean(None, page);
        for headline in [
            "Neue Radwege für die Innenstadt geplant",
            "Bürgermeister eröffnet das Stadtfest am Wochenende",
            "Feuerwehr löscht Brand in einer Lagerhalle",
            "Aus der Region",
        ] {
            assert_removed(&c, headline, RelatedLinks);
        }
        assert_eq!(c.paragraphs.len(), 2, "{:?}", c.paragraphs);
    }
}

#[test]
fn lexicon_heading_takes_headlines_that_end_with_a_period() {
    let text = "Die Regierung hat ein neues Gesetz vorgestellt. Es soll im Herbst gelten.\n\
                Lesen Sie auch:\n\
                Kanzler reist nach Paris.\n\
                Opposition kritisiert Haushaltsentwurf scharf.";
    let c = clean(None, text);
    assert_removed(&c, "Lesen Sie auch:", RelatedLinks);
    assert_removed(&c, "Kanzler reist nach Paris.", RelatedLinks);
    assert_removed(
        &c,
        "Opposition kritisiert Haushaltsentwurf scharf.",
        RelatedLinks,
    );
    assert_eq!(
        c.paragraphs,
        vec!["Die Regierung hat ein neues Gesetz vorgestellt. Es soll im Herbst gelten."]
    );
}

#[test]
fn lexicon_zone_stops_at_the_article_body() {
    // A "read also" box in the middle: the body after it stays.
    let text =
        "Erster Absatz des Artikels mit einer ganzen Menge Inhalt. Und noch ein Satz dazu.\n\
                Read also\n\
                Storm hits the coast of Norway overnight\n\
                Der Artikel geht hier weiter und erklärt die Hintergründe. Dazu gibt es Zahlen.\n\
                Kurzer Satz.";
    let c = clean(None, text);
    assert_removed(&c, "Read also", RelatedLinks);
    assert_removed(&c, "Storm hits the coast of Norway overnight", RelatedLinks);
    assert_kept(&c, "Der Artikel geht hier weiter");
    assert_kept(&c, "Kurzer Satz.");
}

#[test]
fn real_short_sentences_and_bullet_lists_are_not_removed() {
    let text = "• Politik\n• Sport\nEs regnet.\nJa.\nDie Forderungen der Gewerkschaft:\n\
                - mehr Lohn für alle Beschäftigten\n\
                - kürzere Arbeitszeiten im Schichtdienst\n\
                Der Streik beginnt am Montag.";
    let c = clean(Some("Streik"), text);
    assert_removed(&c, "• Politik", ShortFragment);
    assert_removed(&c, "• Sport", ShortFragment);
    assert_eq!(
        c.paragraphs,
        vec![
            "Es regnet.",
            "Ja.",
            "Die Forderungen der Gewerkschaft:",
            "- mehr Lohn für alle Beschäftigten",
            "- kürzere Arbeitszeiten im Schichtdienst",
            "Der Streik beginnt am Montag.",
        ]
    );
}

#[test]
fn furniture_of_other_sites_in_other_languages() {
    let en = "LONDON (Reuters) - The Bank of England raised interest rates on Thursday. \
              Governor Andrew Bailey said inflation was still too high.\n\
              Advertisement\n\
              Bailey spoke to reporters after the decision. Photo: Reuters/Toby Melville\n\
              Reporting by John Smith; Editing by Jane Doe\n\
              © 2024 Reuters. All rights reserved.\n\
              Share this article\n\
              Published: 12.03.2024 14:30";
    let c = clean(Some("Bank of England raises rates"), en);
    assert_removed(&c, "LONDON (Reuters) -", AgencyPrefix);
    assert_removed(&c, "Advertisement", ShortFragment);
    assert_removed(&c, "Photo: Reuters/Toby Melville", Credit);
    assert_removed(
        &c,
        "Reporting by John Smith; Editing by Jane Doe",
        ShortFragment,
    );
    assert_removed(&c, "© 2024 Reuters. All rights reserved.", Source);
    assert_removed(&c, "Share this article", ShortFragment);
    assert_removed(&c, "Published: 12.03.2024 14:30", Dateline);
    assert_eq!(
        c.paragraphs,
        vec![
            "The Bank of England raised interest rates on Thursday. Governor Andrew Bailey said inflation was still too high.",
            "Bailey spoke to reporters after the decision.",
        ]
    );

    let cs = "Praha 5. května (ČTK) - Vláda dnes schválila nový rozpočet. Opozice ho kritizuje.\n\
              Premiér na tiskové konferenci (Foto: ČTK) hájil úspory.\n\
              Související články\n\
              Ministr financí představil plán úspor\n\
              Opozice chce vyslovit vládě nedůvěru\n\
              Inflace v dubnu zpomalila na dvě procenta";
    let c = clean(None, cs);
    assert_removed(&c, "Praha 5. května (ČTK) -", AgencyPrefix);
    assert_removed(&c, "(Foto: ČTK)", Credit);
    assert_removed(&c, "Související články", RelatedLinks);
    assert_removed(&c, "Opozice chce vyslovit vládě nedůvěru", RelatedLinks);
    assert_eq!(
        c.paragraphs,
        vec![
            "Vláda dnes schválila nový rozpočet. Opozice ho kritizuje.",
            "Premiér na tiskové konferenci hájil úspory.",
        ]
    );
}

#[test]
fn removed_lines_are_numbered_in_the_text() {
    let c = clean(
        None,
        "Erster Satz.\n\n[Anzeige_1]\nZweiter Satz.\nKommentare (3)",
    );
    let lines: Vec<(usize, RemovalReason)> = c.removed.iter().map(|r| (r.line, r.reason)).collect();
    assert_eq!(lines, vec![(3, Placeholder), (5, Counter)]);
}

//! Bodies of the article endpoints: `POST /v1/align` (a batch through the align workflow),
//! `POST /v1/articles` (one article into the online grouping), `GET /v1/events` and
//! `GET /v1/events/{id}`; and their conversions from the workflow's and the store's types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::app::align::{AlignOutput, ArticleResult, Event, Member, SentenceMap, Skipped, Theme};
use crate::store::EventInfo;
use crate::text::article::Article;
use crate::text::schema;

/// One article of a `POST /v1/align` batch: the same schema as a line of `tidings align`'s JSON
/// lines input. The date may also be called `published`, `date`, `pubDate`, ...; other fields
/// are ignored and named in the answer's `warnings`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(try_from = "Map<String, Value>")]
pub struct ArticleInput {
    /// Unique within the batch.
    pub id: String,
    pub title: Option<String>,
    /// The page text; boilerplate lines are removed before translation.
    pub text: String,
    /// Declared language (ISO 639-1); wins over detection.
    pub lang: Option<String>,
    /// `YYYY-MM-DD` or RFC 3339.
    pub published_at: Option<String>,
    pub url: Option<String>,
    /// The fields that were not article fields (reported, not used; `skip` keeps it out of
    /// the OpenAPI schema).
    #[serde(skip)]
    pub ignored: Vec<String>,
}

/// The article fields, once aliases are resolved and unknown fields set aside.
/// The article fields, once aliases are resolved and unknown fields set aside.
#[derive(Deserialize)]
struct ArticleFields {
    id: String,
    title: Option<String>,
    text: String,
    lang: Option<String>,
    published_at: Option<String>,
    url: Option<String>,
}

impl ArticleInput {
    /// Reads an article object by the one schema ([`schema::normalize`]), and the `extra`
    /// fields (read as `T`) an endpoint takes beside the article's. Errors are in the API's
    /// words, naming the field (the caller's path is put in front of it).
    fn read<T: serde::de::DeserializeOwned>(
        mut object: Map<String, Value>,
        extra: &[&str],
    ) -> Result<(Self, T), String> {
        let ignored = schema::normalize(&mut object, extra)?;
        let extras: Map<String, Value> = extra
            .iter()
            .filter_map(|k| object.remove(*k).map(|v| (k.to_string(), v)))
            .collect();
        let words = |e: serde_path_to_error::Error<serde_json::Error>| {
            crate::server::extract::shape_message(&e)
        };
        let f: ArticleFields =
            serde_path_to_error::deserialize(Value::Object(object)).map_err(words)?;
        let extras = serde_path_to_error::deserialize(Value::Object(extras)).map_err(words)?;
        let article = Self {
            id: f.id,
            title: f.title,
            text: f.text,
            lang: f.lang,
            published_at: f.published_at,
            url: f.url,
            ignored,
        };
        Ok((article, extras))
    }
}

impl TryFrom<Map<String, Value>> for ArticleInput {
    type Error = String;

    fn try_from(object: Map<String, Value>) -> Result<Self, String> {
        let (article, serde::de::IgnoredAny) = Self::read(object, &[])?;
        Ok(article)
    }
}

/// What an answer says of the fields it ignored, article by article.
pub fn ignored_warnings<'a>(
    articles: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> Vec<String> {
    articles
        .into_iter()
        .filter(|(_, ignored)| !ignored.is_empty())
        .map(|(id, ignored)| format!("article {id}: {}", schema::ignored_message(ignored)))
        .collect()
}

impl From<ArticleInput> for Article {
    fn from(a: ArticleInput) -> Self {
        Article {
            id: a.id,
            title: a.title,
            text: a.text,
            lang: a.lang,
            published_at: a.published_at,
            url: a.url,
        }
    }
}

/// `POST /v1/align`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlignRequest {
    pub articles: Vec<ArticleInput>,
}

/// `POST /v1/align`: what `tidings align` writes, without the embeddings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlignResponse {
    pub events: Vec<AlignEvent>,
    /// Similar events gathered; each event names its theme.
    pub themes: Vec<AlignTheme>,
    pub articles: Vec<AlignedArticle>,
    /// Articles that could not be processed, with the reason; the others went on.
    pub skipped: Vec<SkippedArticle>,
    /// What was accepted but not used (fields that are not article fields).
    pub warnings: Vec<String>,
}

/// An event found in an align batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlignEvent {
    pub id: String,
    pub title: String,
    pub keywords: Vec<String>,
    pub shared_names: Vec<String>,
    pub shared_numbers: Vec<String>,
    /// Id of the theme (similar events) the event belongs to.
    pub theme: String,
    pub members: Vec<AlignMember>,
}

/// Similar events of an align batch: same kind of happening, same actors or campaign.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlignTheme {
    pub id: String,
    /// Title of the event closest to the theme's centroid.
    pub title: String,
    pub keywords: Vec<String>,
    /// Names that appear in at least two of its events.
    pub shared_names: Vec<String>,
    /// Ids of its events.
    pub events: Vec<String>,
    /// Cosine similarity of each event's centroid to the theme's centroid, as `events`.
    pub similarities: Vec<f32>,
}

impl From<Theme> for AlignTheme {
    fn from(t: Theme) -> Self {
        let Theme {
            id,
            title,
            keywords,
            shared_names,
            events,
            similarities,
        } = t;
        Self {
            id,
            title,
            keywords,
            shared_names,
            events,
            similarities,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlignMember {
    /// The article id.
    pub id: String,
    /// Cosine similarity of the article to its event's centroid.
    pub similarity: f32,
}

/// One article of an align batch, translated.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlignedArticle {
    pub id: String,
    pub lang: String,
    pub confidence: f32,
    pub title: String,
    pub title_en: String,
    /// English text, paragraph by paragraph (blank line between paragraphs).
    pub translation: String,
    pub sentences: Vec<AlignSentence>,
    /// Models used, as `lang=model@revision`.
    pub models: Vec<String>,
    /// Days since 1970-01-01 of `published_at`, when it was readable.
    #[schema(required = true)]
    pub published_day: Option<i64>,
    /// Boilerplate lines removed before translation.
    pub removed_lines: usize,
}

/// One translated sentence of an aligned article and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlignSentence {
    /// The paragraph (from 0) of the cleaned article.
    pub paragraph: usize,
    /// Start in the cleaned paragraph: a UTF-8 byte offset, not a character index.
    pub start: usize,
    /// End in the cleaned paragraph: a UTF-8 byte offset (exclusive).
    pub end: usize,
    pub source: String,
    pub lang: String,
    pub translation: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SkippedArticle {
    pub id: String,
    pub reason: String,
}

impl From<AlignOutput> for AlignResponse {
    fn from(out: AlignOutput) -> Self {
        let AlignOutput {
            events,
            themes,
            articles,
            skipped,
            ..
        } = out;
        Self {
            events: events.into_iter().map(AlignEvent::from).collect(),
            themes: themes.into_iter().map(AlignTheme::from).collect(),
            articles: articles.into_iter().map(AlignedArticle::from).collect(),
            skipped: skipped
                .into_iter()
                .map(|Skipped { id, reason }| SkippedArticle { id, reason })
                .collect(),
            warnings: Vec::new(),
        }
    }
}

impl From<Event> for AlignEvent {
    fn from(e: Event) -> Self {
        let Event {
            id,
            title,
            keywords,
            shared_names,
            shared_numbers,
            theme,
            members,
        } = e;
        Self {
            id,
            title,
            keywords,
            shared_names,
            shared_numbers,
            theme,
            members: members
                .into_iter()
                .map(|Member { id, similarity }| AlignMember { id, similarity })
                .collect(),
        }
    }
}

impl From<ArticleResult> for AlignedArticle {
    /// The embedding stays behind: the service does not send it.
    fn from(a: ArticleResult) -> Self {
        let ArticleResult {
            id,
            lang,
            confidence,
            title,
            title_en,
            translation,
            sentences,
            models,
            published_day,
            removed_lines,
            embedding: _,
        } = a;
        Self {
            id,
            lang,
            confidence,
            title,
            title_en,
            translation,
            sentences: sentences.into_iter().map(AlignSentence::from).collect(),
            models,
            published_day,
            removed_lines,
        }
    }
}

impl From<SentenceMap> for AlignSentence {
    fn from(s: SentenceMap) -> Self {
        let SentenceMap {
            paragraph,
            start,
            end,
            source,
            lang,
            translation,
        } = s;
        Self {
            paragraph,
            start,
            end,
            source,
            lang,
            translation,
        }
    }
}

/// `POST /v1/articles`: one article for the online grouping, by the same schema as
/// `POST /v1/align`'s articles (date aliases; other fields ignored and named in `warnings`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(try_from = "Map<String, Value>")]
pub struct IngestRequest {
    /// Its `id` is unique across the online grouping (409 when it is already grouped).
    #[serde(flatten)]
    pub article: ArticleInput,
    /// Beam width (1 is greedy), at most the server's `--max-beam`.
    #[schema(minimum = 1)]
    pub beam: Option<usize>,
}

/// What `POST /v1/articles` takes beside the article.
#[derive(Deserialize)]
struct IngestExtras {
    beam: Option<usize>,
}

impl TryFrom<Map<String, Value>> for IngestRequest {
    type Error = String;

    fn try_from(object: Map<String, Value>) -> Result<Self, String> {
        let (article, IngestExtras { beam }) = ArticleInput::read(object, &["beam"])?;
        Ok(Self { article, beam })
    }
}

/// `POST /v1/articles` (201): the article in English and the event it joined.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestResponse {
    pub article: IngestedArticle,
    /// Whether the article opened a new event.
    pub created: bool,
    /// The event, with all its members.
    #[schema(required = true)]
    pub event: Option<EventDetail>,
    /// Mean cosine similarity of the article to the members of the event it joined.
    pub similarity: f64,
    /// What was accepted but not used (fields that are not article fields).
    pub warnings: Vec<String>,
}

/// An article as the online grouping took it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestedArticle {
    /// 1 for a declared language, else the detection's confidence.
    pub confidence: f64,
    pub id: String,
    /// ISO 639-1, or `und` when unknown.
    pub lang: String,
    /// The translation models used.
    pub models: Vec<String>,
    pub title_en: String,
    /// English text, paragraph by paragraph (blank line between paragraphs).
    pub translation: String,
}

/// `GET /v1/events/{id}`: one event of the online grouping with its members.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventDetail {
    /// Unix seconds.
    pub created_at: i64,
    pub id: i64,
    /// What the service stored about the event (`title`, `first_article`); `null` if nothing.
    #[schema(value_type = Option<Object>)]
    #[schema(required = true)]
    pub info: Option<Value>,
    /// In the order they joined.
    pub members: Vec<EventMember>,
    pub size: usize,
    /// The English title of the article that opened the event.
    #[schema(required = true)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventMember {
    /// Unix seconds.
    pub added_at: i64,
    pub article_id: String,
    /// Mean cosine similarity to the event's members when the article joined.
    pub similarity: f64,
}

/// One event of the online grouping, without its members.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventSummary {
    /// Unix seconds.
    pub created_at: i64,
    pub id: i64,
    pub size: usize,
    #[schema(required = true)]
    pub title: Option<String>,
}

/// `GET /v1/events`: one page of the events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// At most `limit` events, from `offset`.
    pub events: Vec<EventSummary>,
    /// Events in all.
    pub total: usize,
}

/// `GET /v1/themes`: similar events of the online grouping (the newest events still inside the
/// time window, at most 2,000), gathered by their centroids.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ThemeList {
    /// In order of their oldest event.
    pub themes: Vec<OnlineThemeSummary>,
    /// Events gathered into these themes.
    pub events_considered: usize,
    /// Events in all.
    pub total_events: usize,
}

/// One theme of the online grouping.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OnlineThemeSummary {
    /// `t` and the id of its oldest event: stable while that event stays in it.
    pub id: String,
    /// The title of its oldest event.
    #[schema(required = true)]
    pub title: Option<String>,
    /// Its events' ids, ascending.
    pub events: Vec<i64>,
    /// Articles in its events.
    pub articles: usize,
}

/// The stored event info (JSON), `None` when absent or unreadable.
fn parse_info(info: Option<&EventInfo>) -> Option<Value> {
    info.and_then(|i| serde_json::to_value(i).ok())
}

fn title_of(info: Option<&Value>) -> Option<String> {
    info.and_then(|i| i.get("title"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl From<crate::store::EventRecord> for EventDetail {
    fn from(rec: crate::store::EventRecord) -> Self {
        let info = parse_info(rec.info.as_ref());
        Self {
            created_at: rec.created_at,
            id: rec.id,
            title: title_of(info.as_ref()),
            info,
            size: rec.members.len(),
            members: rec
                .members
                .into_iter()
                .map(|m| EventMember {
                    added_at: m.added_at,
                    article_id: m.article_id,
                    similarity: f64::from(m.similarity),
                })
                .collect(),
        }
    }
}

impl From<crate::store::EventSummary> for EventSummary {
    fn from(e: crate::store::EventSummary) -> Self {
        let info = parse_info(e.info.as_ref());
        Self {
            created_at: e.created_at,
            id: e.id,
            size: e.size,
            title: title_of(info.as_ref()),
        }
    }
}

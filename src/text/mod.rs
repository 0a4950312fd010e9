//! News text before any model sees it: the article as read ([`article`]), page furniture
//! removed ([`clean`]), language codes parsed ([`lang`]) and languages detected ([`detect`]),
//! sentences split ([`segment`]), and all of it in one call ([`prepare`]); the one article
//! schema of files and HTTP ([`schema`]).

pub mod article;
pub mod clean;
pub mod detect;
pub mod lang;
pub mod prepare;
pub mod schema;
pub mod segment;

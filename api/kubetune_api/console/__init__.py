"""The web console at `/ui`: hand-written pages (HTML, CSS, vanilla JS modules) served by the
API itself, which read and act through the same `/api/finetune/*` routes with the caller's
API key (entered once in the page, kept in the tab's sessionStorage, never in a URL)."""

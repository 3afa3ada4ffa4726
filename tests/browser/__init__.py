"""Browser tests (Playwright driving Debian's Chromium); a package, so their module names never clash with tests/."""

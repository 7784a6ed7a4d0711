# Kiosk page end to end (tests/tests/kiosk_browser.rs): headless Chromium driven over WebDriver by
# chromedriver, and CJK fonts so that the Japanese page (and its screenshot) renders real glyphs.
apt_install chromium chromium-driver fonts-noto-cjk

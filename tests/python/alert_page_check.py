"""Opens the ingest sidecar's live alert page in headless Chromium and watches alerts arrive.

Usage: alert_page_check.py URL SCREENSHOT WANT FILTER_RULE

Prints "ready" once the page holds its live connection, then waits for a line on stdin (the test
has produced the events), waits until WANT alert rows are in the DOM, clicks FILTER_RULE's
count, saves a screenshot (before filtering) and prints one JSON object: the rows, the seconds from "produced" to
the last row, the rows left visible by the filter and the per-rule counts.
"""

import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main():
    url, screenshot, want, filter_rule = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "status").text == "live")
        print("ready", flush=True)
        sys.stdin.readline()
        produced = time.monotonic()
        WebDriverWait(driver, 30, poll_frequency=0.05).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.alert")) >= want)
        seconds = time.monotonic() - produced
        rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
                for row in driver.find_elements(By.CSS_SELECTOR, "tr.alert")]
        counts = {button.get_attribute("data-rule"): button.find_element(By.TAG_NAME, "b").text
                  for button in driver.find_elements(By.CSS_SELECTOR, "#counts button")}
        bars = len(driver.find_elements(By.CSS_SELECTOR, "#chart rect"))
        driver.save_screenshot(screenshot)
        driver.find_element(By.CSS_SELECTOR, f'#counts button[data-rule="{filter_rule}"]').click()
        filtered = [row.find_elements(By.TAG_NAME, "td")[1].text
                    for row in driver.find_elements(By.CSS_SELECTOR, "tr.alert") if row.is_displayed()]
        print(json.dumps({"rows": rows, "seconds": seconds, "filtered": filtered,
                          "counts": counts, "bars": bars}), flush=True)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()

"""
Headless Chromium for the portal's browser tests (Debian chromium and
chromium-driver, through Selenium): a window of a given size, and
L{Pages}, which clicks and waits for the next page and saves full-page
screenshots.
"""

from __future__ import annotations

import base64
import os
import shutil
from typing import Any


def chromium(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--lang=en-US"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver


class Pages:
    """
    One browser window on the portal, saving a full-page screenshot of
    each page it shows, as C{directory/PAGE-LANGUAGE-WIDTH.png}.

    @param width: the window's name in those file names (C{narrow}, C{wide}).
    """

    def __init__(self, driver: Any, base: str, directory: str, width: str) -> None:
        self.driver = driver
        self.base = base
        self.directory = directory
        self.width = width

    def shot(self, name: str) -> str:
        lang = self.driver.find_element("tag name", "html").get_attribute("lang")
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path = os.path.join(self.directory, f"{name}-{lang}-{self.width}.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))
        return path

    def click(self, elementID: str) -> None:
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        old = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.ID, elementID).click()

        def replaced(driver: Any) -> bool:
            # staleness_of, but chromedriver may also answer a page being
            # replaced with "Node ... does not belong to the document", a
            # plain WebDriverException: the old page is gone either way.
            try:
                old.is_enabled()
            except WebDriverException:
                return True
            return False

        WebDriverWait(self.driver, 10).until(replaced)

    def text(self, elementID: str) -> str:
        return str(self.driver.find_element("id", elementID).text)

    def type(self, elementID: str, text: str) -> None:
        self.driver.find_element("id", elementID).send_keys(text)

    @property
    def page(self) -> str:
        return str(self.driver.page_source)

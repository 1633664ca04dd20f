"""
What the tests of third-party plugins share: an example plugin of
C{examples/} copied into a fresh directory, as an operator drops it on
C{PYTHONPATH}, then found by Twisted's plugin system.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from twisted.plugin import pluginPackagePaths
from twisted.trial.unittest import SynchronousTestCase

import twisted.plugins

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout's plugins, whether or not aetasip is installed.
CHECKOUT_PLUGINS = os.path.join(ROOT, "twisted", "plugins")


class DroppedPluginTestCase(SynchronousTestCase):
    """
    Each test gets C{self.directory}, holding a copy of C{example}'s files;
    L{dropPlugin} puts it on the paths. The modules the plugin brings are
    forgotten before and after each test.

    @cvar example: the folder under C{examples/}.
    @cvar pluginModule: the plugin module, in C{twisted/plugins/} (no C{.py}).
    @cvar implementation: the module the plugin imports when used.
    """

    example: str
    pluginModule: str
    implementation: str

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        source = os.path.join(ROOT, "examples", self.example)
        for name in (f"{self.implementation}.py", os.path.join("twisted", "plugins", f"{self.pluginModule}.py")):
            os.makedirs(os.path.join(self.directory, os.path.dirname(name)), exist_ok=True)
            shutil.copyfile(os.path.join(source, name), os.path.join(self.directory, name))
        # A namespace package, as Twisted wants plugin directories.
        self.assertFalse(os.path.exists(os.path.join(self.directory, "twisted", "__init__.py")))
        self.addCleanup(self.forgetPluginModules)
        self.forgetPluginModules()

    def forgetPluginModules(self) -> None:
        for name in (self.implementation, f"twisted.plugins.{self.pluginModule}"):
            sys.modules.pop(name, None)
        if hasattr(twisted.plugins, self.pluginModule):
            delattr(twisted.plugins, self.pluginModule)

    def dropPlugin(self) -> None:
        """
        Put the directory on C{sys.path}, and its C{twisted/plugins} on the
        plugin path as C{twisted/plugins/__init__.py} does for the
        directories on C{sys.path} when it is first imported.
        """
        self.patch(sys, "path", [*sys.path, self.directory])
        known = list(twisted.plugins.__path__)
        added = [
            path for path in [CHECKOUT_PLUGINS, *pluginPackagePaths(twisted.plugins.__name__)] if path not in known
        ]
        self.patch(twisted.plugins, "__path__", known + added)

    def assertFoundHere(self, factory: object) -> None:
        """C{factory} comes from the dropped copy of the plugin."""
        module = sys.modules[type(factory).__module__]
        self.assertEqual(module.__name__, f"twisted.plugins.{self.pluginModule}")
        self.assertTrue(str(module.__file__).startswith(self.directory + os.sep))

    def runWithPlugin(self, program: str) -> str:
        """
        Run C{program} in a new interpreter with the directory on
        C{PYTHONPATH} (no help from the test); return what it printed.
        """
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([self.directory, ROOT])}
        result = subprocess.run(
            [sys.executable, "-c", program], env=environment, cwd=self.directory, capture_output=True, text=True
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

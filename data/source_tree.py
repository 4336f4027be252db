"""Read a data set download the same way whether it is a folder or a zip archive."""
from __future__ import annotations

import os
import shutil
import zipfile
import zlib
from typing import List

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.image_files import is_regular_file

LINK_MODES = ("symlink", "hardlink", "copy")


class SourceTreeError(ToolkitError):
    """A download that cannot be read."""


def _ignored(relpath: str) -> bool:
    # macOS archives carry __MACOSX/ resource forks and ._* / .DS_Store files beside the images.
    parts = relpath.replace("\\", "/").split("/")
    return any(part == "__MACOSX" or part.startswith(".") for part in parts)


class SourceTree:
    """Files of a folder or a zip, addressed by '/'-separated paths relative to its top."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._zip = None
        if os.path.isdir(location):
            self.kind = "folder"
        elif zipfile.is_zipfile(location):
            self.kind = "zip"
            self._zip = zipfile.ZipFile(location)
        elif os.path.exists(location):
            raise SourceTreeError(f"{location} is neither a folder nor a zip archive")
        else:
            raise SourceTreeError(f"{location} does not exist")

    def files(self) -> List[str]:
        if self._zip is not None:
            names = [info.filename for info in self._zip.infolist() if not info.is_dir()]
        else:
            names = []
            for root, dirs, files in os.walk(self.location, followlinks=True):
                dirs.sort()
                rel_root = os.path.relpath(root, self.location)
                for name in sorted(files):
                    path = name if rel_root == "." else os.path.join(rel_root, name)
                    if is_regular_file(os.path.join(self.location, path)):  # not a pipe: reading it could block
                        names.append(path.replace(os.sep, "/"))
        return [name for name in names if not _ignored(name)]

    def read(self, relpath: str) -> bytes:
        """The file's bytes; OSError (a damaged zip member included) when they cannot be read."""
        if self._zip is not None:
            try:
                return self._zip.read(relpath)
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # a bad CRC, a truncated member
                raise OSError(f"damaged in the archive ({err})") from None
        with open(os.path.join(self.location, relpath), "rb") as handle:
            return handle.read()

    def describe(self, relpath: str) -> str:
        """Where a file came from, for the manifest."""
        if self._zip is not None:
            return f"{os.path.abspath(self.location)}!{relpath}"
        return os.path.abspath(os.path.join(self.location, relpath))

    def materialize(self, relpath: str, destination: str, mode: str) -> None:
        """Put ``relpath`` at ``destination`` as a symlink, hard link or copy (zip members are copied)."""
        if self._zip is not None:
            with self._zip.open(relpath) as source, open(destination, "wb") as target:
                shutil.copyfileobj(source, target)
            return
        source_path = os.path.abspath(os.path.join(self.location, relpath))
        if mode == "symlink":
            os.symlink(source_path, destination)
        elif mode == "hardlink":
            os.link(source_path, destination)
        else:
            shutil.copyfile(source_path, destination)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

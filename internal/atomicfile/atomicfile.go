// Package atomicfile writes small files that must never be seen half
// written (a saved config, generated credentials): readers find either the
// old content or the new, also after a crash or power loss.
package atomicfile

import (
	"os"
	"path/filepath"

	"github.com/msgmesh/msgmesh/internal/boltfile"
)

// Write writes data to path atomically: a temporary file of mode 0600 in
// the same directory, written, fsynced and renamed over path, then the
// directory fsynced so the rename survives a crash.
func Write(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return boltfile.SyncDir(dir)
}

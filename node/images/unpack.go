package images

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Resolve returns the image ref names: its id ("sha256:<config digest>"),
// the directories of its unpacked layers, lowest first (overlayfs
// lowerdirs), and its config. Layers are unpacked on first use, once each.
func (s *Store) Resolve(ref string) (string, []string, *v1.ConfigFile, error) {
	unlock, err := s.lock(false)
	if err != nil {
		return "", nil, nil, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return "", nil, nil, err
	}
	h, err := s.find(idx, ref)
	if err != nil {
		return "", nil, nil, err
	}
	m, err := s.manifest(h)
	if err != nil {
		return "", nil, nil, fmt.Errorf("image %q: %w", ref, err)
	}
	cfg, err := s.config(m.Config.Digest)
	if err != nil {
		return "", nil, nil, fmt.Errorf("image %q: %w", ref, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return "", nil, nil, fmt.Errorf("image %q: %d layers but %d diff ids", ref, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	dirs := make([]string, len(m.Layers))
	for i, l := range m.Layers {
		if dirs[i], err = s.unpack(l.Digest, cfg.RootFS.DiffIDs[i]); err != nil {
			return "", nil, nil, fmt.Errorf("image %q: %w", ref, err)
		}
	}
	return m.Config.Digest.String(), dirs, cfg, nil
}

// unpack makes sure layer blob h is unpacked into its diffID's directory.
// Concurrent callers in this process wait for one unpack; across processes
// each unpacks into its own temporary directory and the first rename wins.
func (s *Store) unpack(h, diffID v1.Hash) (string, error) {
	dir := s.layerDir(diffID)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	s.mu.Lock()
	mu := s.layerMu[diffID.Hex]
	if mu == nil {
		mu = &sync.Mutex{}
		s.layerMu[diffID.Hex] = mu
	}
	s.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}

	tmp, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), tempPrefix()+"layer-*")
	if err != nil {
		return "", fmt.Errorf("layer %s: %w", diffID, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("layer %s: %w", diffID, err)
	}
	f, err := os.Open(s.blobPath(h))
	if err != nil {
		return "", fmt.Errorf("layer %s: %w", diffID, err)
	}
	defer f.Close()
	r, err := decompress(f)
	if err != nil {
		return "", fmt.Errorf("layer %s: %w", diffID, err)
	}
	defer r.Close()
	sum := sha256.New()
	tee := io.TeeReader(r, sum)
	if err := applyLayer(tmp, tar.NewReader(tee)); err != nil {
		return "", fmt.Errorf("layer %s: %w", diffID, err)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil { // the archive's padding
		return "", fmt.Errorf("layer %s: %w", diffID, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != diffID.Hex {
		return "", fmt.Errorf("layer %s: content has diff id sha256:%s", diffID, got)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			return dir, nil // another process finished first
		}
		return "", fmt.Errorf("layer %s: %w", diffID, err)
	}
	return dir, nil
}

// decompress recognises gzip and zstd by their magic numbers; anything else
// is read as an uncompressed tar.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return gzip.NewReader(br)
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		d, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// applyLayer writes a layer's entries under dir in overlayfs form: a
// whiteout .wh.NAME becomes a 0/0 character device NAME, an opaque marker
// sets trusted.overlay.opaque=y on its directory. Every path goes through
// an os.Root, so no entry (nor a symlink an earlier entry made) reaches
// outside dir.
func applyLayer(dir string, tr *tar.Reader) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	type dirTime struct {
		rel   string
		atime time.Time
		mtime time.Time
	}
	var dirTimes []dirTime
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		rel, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			rel = "."
			if hdr.Typeflag != tar.TypeDir {
				continue
			}
		}
		parent, base := path.Split(rel)
		parent = strings.TrimSuffix(parent, "/")
		if parent == "" {
			parent = "."
		}
		if parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		}
		if base == opaqueMarker {
			if err := withDir(root, parent, func(fd int) error {
				return unix.Fsetxattr(fd, "trusted.overlay.opaque", []byte("y"), 0)
			}); err != nil {
				return fmt.Errorf("%s: opaque directory: %w", hdr.Name, err)
			}
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			target := path.Join(parent, base[len(whiteoutPrefix):])
			if err := removeExisting(root, target, false); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
			if err := withDir(root, parent, func(fd int) error {
				return unix.Mknodat(fd, base[len(whiteoutPrefix):], unix.S_IFCHR, 0)
			}); err != nil {
				return fmt.Errorf("%s: whiteout: %w", hdr.Name, err)
			}
			continue
		}
		if rel != "." {
			if err := removeExisting(root, rel, hdr.Typeflag == tar.TypeDir); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		}
		mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if rel != "." {
				if err := root.Mkdir(rel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("%s: %w", hdr.Name, err)
				}
			}
			dirTimes = append(dirTimes, dirTime{rel, hdr.AccessTime, hdr.ModTime})
		case tar.TypeReg:
			if err := writeFile(root, rel, hdr, tr, mode); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
			continue // ownership, mode and times are set on the open file
		case tar.TypeSymlink:
			// The target is not checked: it resolves inside the container.
			if err := root.Symlink(hdr.Linkname, rel); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
			if err := root.Lchown(rel, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
			continue
		case tar.TypeLink:
			target, err := cleanName(hdr.Linkname)
			if err != nil || target == "" {
				return fmt.Errorf("%s: hard link to %q outside the layer", hdr.Name, hdr.Linkname)
			}
			if err := root.Link(target, rel); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
			continue // it shares its target's inode
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
			dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
			if err := withDir(root, parent, func(fd int) error {
				return unix.Mknodat(fd, base, kind|uint32(mode.Perm()), int(dev))
			}); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		default:
			continue // e.g. GNU volume headers: nothing to create
		}
		if err := root.Lchown(rel, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if err := root.Chmod(rel, mode); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if hdr.Typeflag != tar.TypeDir {
			if err := root.Chtimes(rel, atimeOr(hdr), hdr.ModTime); err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		}
	}
	// Directory times last: creating entries inside them changed them.
	for i := len(dirTimes) - 1; i >= 0; i-- {
		d := dirTimes[i]
		at := d.atime
		if at.IsZero() {
			at = d.mtime
		}
		if err := root.Chtimes(d.rel, at, d.mtime); err != nil {
			return fmt.Errorf("%s: %w", d.rel, err)
		}
	}
	return nil
}

func atimeOr(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// writeFile creates a regular file with the entry's content, ownership,
// mode, extended attributes (after chown, which would clear file
// capabilities) and times.
func writeFile(root *os.Root, rel string, hdr *tar.Header, r io.Reader, mode fs.FileMode) error {
	f, err := root.OpenFile(rel, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if err := unix.Fsetxattr(int(f.Fd()), attr, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
				return fmt.Errorf("xattr %s: %w", attr, err)
			}
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return root.Chtimes(rel, atimeOr(hdr), hdr.ModTime)
}

// removeExisting clears the way for a new entry at rel: a later entry of a
// layer replaces an earlier one, except that a directory over a directory
// merges.
func removeExisting(root *os.Root, rel string, isDir bool) error {
	fi, err := root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if isDir && fi.IsDir() {
		return nil
	}
	return root.RemoveAll(rel)
}

// withDir runs fn with a descriptor of directory rel inside root, for the
// *at and f* system calls os.Root does not offer.
func withDir(root *os.Root, rel string, fn func(fd int) error) error {
	d, err := root.Open(rel)
	if err != nil {
		return err
	}
	defer d.Close()
	sc, err := d.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := sc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Package images owns the node's image store: content-addressed blobs, the
// index of references to image manifests, import of image tarballs (OCI
// layout and docker-archive), pulls over the OCI distribution protocol, and
// each layer unpacked once into a directory in overlayfs form for the
// runtime's rootfs mounts. It also gives image garbage collection its
// primitives (DiskUsage, RemoveUnused).
//
// On disk, under the store's directory:
//
//	oci-layout, index.json   an OCI image layout: index.json lists one
//	                         descriptor per reference (annotation
//	                         org.opencontainers.image.ref.name), untagged
//	                         images without the annotation
//	blobs/sha256/<hex>       manifests, configs and layers as they came
//	layers/<hex of diffID>/  unpacked layers (hex only: overlayfs option
//	                         strings separate lowerdirs with ':')
//	tmp/<pid>-*              work in progress, renamed into place when
//	                         complete so a crash never leaves a partial blob
//	                         or layer where a complete one is expected
//	lock                     flock(2) taken shared by readers and
//	                         exclusively by writers, so the agent and the
//	                         `navarch image` command can share the store
package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ErrNotFound is returned (wrapped) when a reference names no image in the store.
var ErrNotFound = errors.New("not found")

// refAnnotation is the OCI annotation that holds an index entry's reference.
const refAnnotation = "org.opencontainers.image.ref.name"

// Store is an image store under one directory. Its methods are safe for
// concurrent use, also by several processes sharing the directory.
type Store struct {
	root string

	mu      sync.Mutex
	layerMu map[string]*sync.Mutex // per diffID: one unpack at a time in this process
	pending map[string]int         // blobs written by pulls not yet in the index
}

// Image is one image of the store as List reports it.
type Image struct {
	ID          string   // "sha256:<config digest>"
	RepoTags    []string // name:tag references
	RepoDigests []string // name@sha256:<manifest digest>
	Size        int64    // bytes of config and layers as stored
	Manifest    v1.Hash
}

// Open opens (creating if needed) the store under dir and removes work left
// behind by processes that no longer run.
func Open(dir string) (*Store, error) {
	s := &Store{root: dir, layerMu: map[string]*sync.Mutex{}, pending: map[string]int{}}
	for _, d := range []string{"blobs/sha256", "layers", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store %s: %w", dir, err)
		}
	}
	layoutFile := filepath.Join(dir, "oci-layout")
	if _, err := os.Stat(layoutFile); errors.Is(err, fs.ErrNotExist) {
		if err := s.writeAtomic(layoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return nil, fmt.Errorf("image store %s: %w", dir, err)
		}
	}
	s.cleanTmp()
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.root }

// cleanTmp removes temporary entries whose creating process is gone.
func (s *Store) cleanTmp() {
	entries, _ := os.ReadDir(filepath.Join(s.root, "tmp"))
	for _, e := range entries {
		pid, err := strconv.Atoi(strings.SplitN(e.Name(), "-", 2)[0])
		if err == nil && pid > 0 && (pid == os.Getpid() || syscall.Kill(pid, 0) == nil) {
			continue
		}
		os.RemoveAll(filepath.Join(s.root, "tmp", e.Name()))
	}
}

// tempName returns a prefix for temporary entries that names this process.
func tempPrefix() string { return strconv.Itoa(os.Getpid()) + "-" }

// lock takes the store's file lock, shared or exclusive. Each call opens the
// lock file anew: flock locks belong to open file descriptions, so goroutines
// of one process exclude each other as separate processes do.
func (s *Store) lock(exclusive bool) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// writeAtomic writes data to path through a temporary file and a rename.
func (s *Store) writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), tempPrefix()+"file-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.root, "blobs", h.Algorithm, h.Hex)
}

func (s *Store) layerDir(diffID v1.Hash) string {
	return filepath.Join(s.root, "layers", diffID.Hex)
}

func (s *Store) hasBlob(h v1.Hash) bool {
	_, err := os.Stat(s.blobPath(h))
	return err == nil
}

// writeBlob stores r's content as blob h, verifying the digest. A blob that
// is already present is kept (it was verified when written).
func (s *Store) writeBlob(h v1.Hash, r io.Reader) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return fmt.Errorf("blob %s: unsupported digest", h)
	}
	if s.hasBlob(h) {
		return nil
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), tempPrefix()+"blob-*")
	if err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	defer os.Remove(f.Name())
	sum := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, sum), r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
		return fmt.Errorf("blob %s: content has digest sha256:%s", h, got)
	}
	if err := os.Rename(f.Name(), s.blobPath(h)); err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	return nil
}

// moveBlob verifies the file at path has digest h and renames it into the
// store (path must be on the store's filesystem).
func (s *Store) moveBlob(h v1.Hash, path string) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return fmt.Errorf("blob %s: unsupported digest", h)
	}
	if s.hasBlob(h) {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	sum := sha256.New()
	_, err = io.Copy(sum, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
		return fmt.Errorf("blob %s: content has digest sha256:%s", h, got)
	}
	if err := os.Rename(path, s.blobPath(h)); err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	return nil
}

func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	b, err := os.ReadFile(s.blobPath(h))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", h, err)
	}
	return b, nil
}

// readIndex reads index.json; a missing file is an empty index.
func (s *Store) readIndex() (*v1.IndexManifest, error) {
	b, err := os.ReadFile(filepath.Join(s.root, "index.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	return &idx, nil
}

func (s *Store) writeIndex(idx *v1.IndexManifest) error {
	idx.SchemaVersion, idx.MediaType = 2, types.OCIImageIndex
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	if err := s.writeAtomic(filepath.Join(s.root, "index.json"), b); err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	return nil
}

// manifest reads and parses the image manifest of blob h.
func (s *Store) manifest(h v1.Hash) (*v1.Manifest, error) {
	b, err := s.readBlob(h)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(strings.NewReader(string(b)))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", h, err)
	}
	return m, nil
}

func (s *Store) config(h v1.Hash) (*v1.ConfigFile, error) {
	f, err := os.Open(s.blobPath(h))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", h, err)
	}
	defer f.Close()
	c, err := v1.ParseConfigFile(f)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", h, err)
	}
	return c, nil
}

// commit records desc under ref (or untagged when ref is ""), moving ref
// away from any image it named before. An image left without references
// stays in the index untagged, as docker keeps a retagged image, so that
// its id still resolves for containers created from it. Callers hold the
// exclusive lock.
func (s *Store) commit(idx *v1.IndexManifest, ref string, desc v1.Descriptor) {
	if ref == "" {
		for _, d := range idx.Manifests {
			if d.Digest == desc.Digest {
				return // already present, tagged or not
			}
		}
		desc.Annotations = nil
		idx.Manifests = append(idx.Manifests, desc)
		return
	}
	var kept []v1.Descriptor
	var orphans []v1.Descriptor
	for _, d := range idx.Manifests {
		name := d.Annotations[refAnnotation]
		switch {
		case name == ref:
			if d.Digest != desc.Digest {
				d.Annotations = nil
				orphans = append(orphans, d)
			}
		case name == "" && d.Digest == desc.Digest:
			// superseded by the tagged entry
		default:
			kept = append(kept, d)
		}
	}
	for _, o := range orphans {
		present := false
		for _, d := range kept {
			present = present || d.Digest == o.Digest
		}
		if !present {
			kept = append(kept, o)
		}
	}
	desc.Annotations = map[string]string{refAnnotation: ref}
	idx.Manifests = append(kept, desc)
}

// List returns the store's images, ordered by their first reference.
func (s *Store) List() ([]Image, error) {
	unlock, err := s.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	return s.images(idx)
}

// Get returns the image ref names.
func (s *Store) Get(ref string) (Image, error) {
	unlock, err := s.lock(false)
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return Image{}, err
	}
	h, err := s.find(idx, ref)
	if err != nil {
		return Image{}, err
	}
	imgs, err := s.images(idx)
	if err != nil {
		return Image{}, err
	}
	for _, img := range imgs {
		if img.Manifest == h {
			return img, nil
		}
	}
	return Image{}, fmt.Errorf("image %q: %w", ref, ErrNotFound)
}

// images groups the index's entries by manifest.
func (s *Store) images(idx *v1.IndexManifest) ([]Image, error) {
	byManifest := map[v1.Hash]*Image{}
	var order []v1.Hash
	for _, d := range idx.Manifests {
		img := byManifest[d.Digest]
		if img == nil {
			m, err := s.manifest(d.Digest)
			if err != nil {
				return nil, err
			}
			img = &Image{ID: m.Config.Digest.String(), Manifest: d.Digest, Size: m.Config.Size}
			for _, l := range m.Layers {
				img.Size += l.Size
			}
			byManifest[d.Digest] = img
			order = append(order, d.Digest)
		}
		ref := d.Annotations[refAnnotation]
		if ref == "" {
			continue
		}
		repo, _, isDigest := splitRef(ref)
		if !isDigest {
			img.RepoTags = append(img.RepoTags, ref)
		}
		img.RepoDigests = appendUnique(img.RepoDigests, repo+"@"+d.Digest.String())
		if isDigest {
			img.RepoDigests = appendUnique(img.RepoDigests, ref)
		}
	}
	out := make([]Image, 0, len(order))
	for _, h := range order {
		img := byManifest[h]
		sort.Strings(img.RepoTags)
		sort.Strings(img.RepoDigests)
		out = append(out, *img)
	}
	sort.SliceStable(out, func(i, j int) bool { return sortKey(out[i]) < sortKey(out[j]) })
	return out, nil
}

func sortKey(img Image) string {
	if len(img.RepoTags) > 0 {
		return img.RepoTags[0]
	}
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return "~" + img.ID // untagged images last
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// find returns the manifest digest that ref names: a reference (normalized
// as docker does: busybox is docker.io/library/busybox:latest), an image id
// or a unique prefix of one (at least 12 hex digits), or a manifest digest.
func (s *Store) find(idx *v1.IndexManifest, ref string) (v1.Hash, error) {
	if ref == "" {
		return v1.Hash{}, fmt.Errorf("image reference is empty")
	}
	if norm, err := Normalize(ref); err == nil {
		for _, d := range idx.Manifests {
			if d.Annotations[refAnnotation] == norm {
				return d.Digest, nil
			}
		}
		// name@digest of a manifest stored under another name or a tag.
		if _, dig, isDigest := splitRef(norm); isDigest {
			for _, d := range idx.Manifests {
				if d.Digest.String() == dig {
					return d.Digest, nil
				}
			}
		}
	}
	hexPart := strings.TrimPrefix(ref, "sha256:")
	if len(hexPart) >= 12 && len(hexPart) <= 64 && isHex(hexPart) {
		var match *v1.Hash
		for _, d := range idx.Manifests {
			if strings.HasPrefix(d.Digest.Hex, hexPart) && len(hexPart) == 64 {
				h := d.Digest
				return h, nil
			}
			m, err := s.manifest(d.Digest)
			if err != nil {
				return v1.Hash{}, err
			}
			if strings.HasPrefix(m.Config.Digest.Hex, hexPart) {
				if match != nil && *match != d.Digest {
					return v1.Hash{}, fmt.Errorf("image %q: ambiguous id prefix", ref)
				}
				h := d.Digest
				match = &h
			}
		}
		if match != nil {
			return *match, nil
		}
	}
	return v1.Hash{}, fmt.Errorf("image %q: %w", ref, ErrNotFound)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Remove removes the image ref names and frees the blobs and unpacked layers
// no other image uses. A tag removes only that reference when the image has
// others; an id or digest removes the image with all its references. It
// returns the id of the image when the image itself is gone, "" when only a
// reference went. The caller must not remove images that containers use
// (their layer directories are overlay lowerdirs).
func (s *Store) Remove(ref string) (string, error) {
	unlock, err := s.lock(true)
	if err != nil {
		return "", err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return "", err
	}
	h, err := s.find(idx, ref)
	if err != nil {
		return "", err
	}
	m, err := s.manifest(h)
	if err != nil {
		return "", err
	}
	norm, _ := Normalize(ref)
	byRef := false
	for _, d := range idx.Manifests {
		if d.Digest == h && d.Annotations[refAnnotation] == norm && norm != "" {
			byRef = true
		}
	}
	var kept []v1.Descriptor
	remaining := 0
	for _, d := range idx.Manifests {
		if d.Digest == h && (!byRef || d.Annotations[refAnnotation] == norm) {
			continue
		}
		if d.Digest == h {
			remaining++
		}
		kept = append(kept, d)
	}
	idx.Manifests = kept
	if err := s.writeIndex(idx); err != nil {
		return "", err
	}
	if remaining > 0 {
		return "", nil
	}
	if err := s.gc(idx); err != nil {
		return "", err
	}
	return m.Config.Digest.String(), nil
}

// RemoveUnused removes every image for whose id keep returns false, then
// frees their blobs and layers. It returns the ids removed. The kubelet's
// image garbage collection calls it with the ids that containers use kept.
func (s *Store) RemoveUnused(keep func(id string) bool) ([]string, error) {
	unlock, err := s.lock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var kept []v1.Descriptor
	removed := map[string]bool{}
	var ids []string
	for _, d := range idx.Manifests {
		m, err := s.manifest(d.Digest)
		if err != nil {
			return nil, err
		}
		id := m.Config.Digest.String()
		if keep(id) {
			kept = append(kept, d)
			continue
		}
		if !removed[id] {
			removed[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	idx.Manifests = kept
	if err := s.writeIndex(idx); err != nil {
		return nil, err
	}
	return ids, s.gc(idx)
}

// gc deletes the blobs and layer directories no image of idx references
// (blobs of pulls in progress in this process are kept). Layer directories
// are renamed away before deletion so a half-deleted one never looks
// complete. Callers hold the exclusive lock.
func (s *Store) gc(idx *v1.IndexManifest) error {
	blobs := map[string]bool{}
	layers := map[string]bool{}
	for _, d := range idx.Manifests {
		blobs[d.Digest.Hex] = true
		m, err := s.manifest(d.Digest)
		if err != nil {
			return err
		}
		blobs[m.Config.Digest.Hex] = true
		for _, l := range m.Layers {
			blobs[l.Digest.Hex] = true
		}
		c, err := s.config(m.Config.Digest)
		if err != nil {
			return err
		}
		for _, diffID := range c.RootFS.DiffIDs {
			layers[diffID.Hex] = true
		}
	}
	s.mu.Lock()
	for h := range s.pending {
		blobs[h] = true
	}
	s.mu.Unlock()
	entries, err := os.ReadDir(filepath.Join(s.root, "blobs", "sha256"))
	if err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	for _, e := range entries {
		if !blobs[e.Name()] {
			if err := os.Remove(filepath.Join(s.root, "blobs", "sha256", e.Name())); err != nil {
				return fmt.Errorf("image gc: %w", err)
			}
		}
	}
	entries, err = os.ReadDir(filepath.Join(s.root, "layers"))
	if err != nil {
		return fmt.Errorf("image gc: %w", err)
	}
	for _, e := range entries {
		if layers[e.Name()] {
			continue
		}
		doomed := filepath.Join(s.root, "tmp", tempPrefix()+"rm-"+e.Name())
		if err := os.Rename(filepath.Join(s.root, "layers", e.Name()), doomed); err != nil {
			return fmt.Errorf("image gc: %w", err)
		}
		if err := os.RemoveAll(doomed); err != nil {
			return fmt.Errorf("image gc: %w", err)
		}
	}
	return nil
}

// Usage is the store's disk usage.
type Usage struct {
	BlobBytes  int64  // bytes of blobs (compressed layers, manifests, configs)
	LayerBytes int64  // bytes of unpacked layers
	Inodes     int64  // inodes of blobs and unpacked layers
	Capacity   uint64 // bytes of the filesystem holding the store
	Available  uint64 // bytes available to unprivileged users on it
}

// DiskUsage measures the store: its blobs, its unpacked layers (hard links
// counted once) and the filesystem it lives on.
func (s *Store) DiskUsage() (Usage, error) {
	unlock, err := s.lock(false)
	if err != nil {
		return Usage{}, err
	}
	defer unlock()
	var u Usage
	seen := map[uint64]bool{}
	walk := func(dir string, total *int64) error {
		return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok || seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
			u.Inodes++
			*total += st.Blocks * 512
			return nil
		})
	}
	if err := walk(filepath.Join(s.root, "blobs"), &u.BlobBytes); err != nil {
		return Usage{}, fmt.Errorf("image store usage: %w", err)
	}
	if err := walk(filepath.Join(s.root, "layers"), &u.LayerBytes); err != nil {
		return Usage{}, fmt.Errorf("image store usage: %w", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.root, &st); err != nil {
		return Usage{}, fmt.Errorf("image store usage: %w", err)
	}
	u.Capacity = st.Blocks * uint64(st.Bsize)
	u.Available = st.Bavail * uint64(st.Bsize)
	return u, nil
}

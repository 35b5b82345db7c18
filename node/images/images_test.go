package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// entry is one tar entry of a test layer.
type entry struct {
	name string
	typ  byte
	body string
	mode int64
	uid  int
	gid  int
	link string
}

func tarBytes(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Uid: e.uid, Gid: e.gid, Linkname: e.link,
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layer(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	b := tarBytes(t, entries)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func image(t *testing.T, entrypoint string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = []string{entrypoint}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func imageID(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dockerArchive(t *testing.T, images map[string]v1.Image) string {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for ref, img := range images {
		tag, err := name.NewTag(ref)
		if err != nil {
			t.Fatal(err)
		}
		refs[tag] = img
	}
	p := filepath.Join(t.TempDir(), "docker.tar")
	if err := tarball.MultiRefWriteToFile(p, refs); err != nil {
		t.Fatal(err)
	}
	return p
}

// tarDir tars a directory (an OCI layout written by go-containerregistry).
func tarDir(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "oci.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers (ownership, whiteout devices, trusted xattrs) needs root")
	}
}

func tagsOf(imgs []Image) map[string]string {
	out := map[string]string{}
	for _, img := range imgs {
		for _, tag := range img.RepoTags {
			out[tag] = img.ID
		}
	}
	return out
}

func TestImportDockerArchive(t *testing.T) {
	s := open(t)
	a := image(t, "/a", layer(t, entry{name: "a", body: "a"}))
	b := image(t, "/b", layer(t, entry{name: "b", body: "b"}))
	p := dockerArchive(t, map[string]v1.Image{"example.com/a:1": a, "example.com/a:latest": a, "busybox:2": b})
	refs, err := s.ImportFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 3 {
		t.Fatalf("imported %v, want 3 references", refs)
	}
	imgs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 {
		t.Fatalf("List = %+v, want 2 images", imgs)
	}
	tags := tagsOf(imgs)
	want := map[string]string{
		"example.com/a:1": imageID(t, a), "example.com/a:latest": imageID(t, a),
		"docker.io/library/busybox:2": imageID(t, b),
	}
	for ref, id := range want {
		if tags[ref] != id {
			t.Errorf("tag %s -> %q, want %q (all: %v)", ref, tags[ref], id, tags)
		}
	}
	for _, img := range imgs {
		if img.Size <= 0 || len(img.RepoDigests) == 0 {
			t.Errorf("image %s: size %d, digests %v", img.ID, img.Size, img.RepoDigests)
		}
	}
	// Short names, ids, id prefixes and digests all resolve.
	img, err := s.Get("busybox:2")
	if err != nil || img.ID != imageID(t, b) {
		t.Fatalf("Get(busybox:2) = %+v, %v", img, err)
	}
	for _, ref := range []string{img.ID, strings.TrimPrefix(img.ID, "sha256:")[:12], img.RepoDigests[0], img.Manifest.String()} {
		if got, err := s.Get(ref); err != nil || got.ID != img.ID {
			t.Errorf("Get(%s) = %+v, %v", ref, got, err)
		}
	}
	if _, err := s.Get("example.com/nope:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an unknown image: %v, want ErrNotFound", err)
	}
	// Importing again changes nothing.
	if _, err := s.ImportFile(p); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.List(); len(again) != 2 {
		t.Errorf("after a second import: %d images, want 2", len(again))
	}
}

func TestImportOCILayout(t *testing.T) {
	s := open(t)
	mine := image(t, "/mine", layer(t, entry{name: "mine", body: "for this machine"}))
	other := image(t, "/other", layer(t, entry{name: "other", body: "for another machine"}))
	plain := image(t, "/plain", layer(t, entry{name: "plain", body: "plain"}))
	otherArch := "s390x"
	if runtime.GOARCH == otherArch {
		otherArch = "arm64"
	}
	multi := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(multi, layout.WithAnnotations(map[string]string{refAnnotation: "example.com/multi:3"})); err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(plain, layout.WithAnnotations(map[string]string{"io.containerd.image.name": "example.com/plain:1", refAnnotation: "1"})); err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(plain, layout.WithAnnotations(map[string]string{refAnnotation: "bare-tag"})); err != nil {
		t.Fatal(err)
	}
	refs, err := s.ImportFile(tarDir(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(refs, ",") != "example.com/multi:3,example.com/plain:1,"+imageID(t, plain) {
		t.Errorf("imported %v", refs)
	}
	imgs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	tags := tagsOf(imgs)
	if tags["example.com/multi:3"] != imageID(t, mine) || tags["example.com/plain:1"] != imageID(t, plain) || len(imgs) != 2 {
		t.Errorf("List = %+v", imgs)
	}
	// The same images written by WriteOCIArchive import too.
	var buf bytes.Buffer
	if err := WriteOCIArchive(&buf, []Named{{"example.com/again:1", plain}, {"example.com/again:2", mine}}); err != nil {
		t.Fatal(err)
	}
	// Also gzip-compressed, as `docker save | gzip` gives.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(buf.Bytes())
	zw.Close()
	refs, err = s.Import(&gz)
	if err != nil || strings.Join(refs, ",") != "example.com/again:1,example.com/again:2" {
		t.Fatalf("Import(gzip of WriteOCIArchive) = %v, %v", refs, err)
	}
}

func TestImportBadInput(t *testing.T) {
	s := open(t)
	dir := t.TempDir()
	notTar := filepath.Join(dir, "not.tar")
	os.WriteFile(notTar, []byte(strings.Repeat("this is not a tarball\n", 100)), 0o644)
	plainTar := filepath.Join(dir, "plain.tar")
	os.WriteFile(plainTar, tarBytes(t, []entry{{name: "hello.txt", body: "hi"}}), 0o644)
	for _, c := range []struct{ file, want string }{
		{filepath.Join(dir, "missing.tar"), "no such file"},
		{notTar, "not a tarball"},
		{plainTar, "neither manifest.json"},
		{dir, "is a directory"},
	} {
		_, err := s.ImportFile(c.file)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ImportFile(%s) = %v, want an error containing %q", c.file, err, c.want)
		}
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("bad input left images: %+v", imgs)
	}
	if tmp, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(tmp) != 0 {
		t.Errorf("bad input left %d entries in tmp", len(tmp))
	}
}

func TestResolveLayers(t *testing.T) {
	needRoot(t)
	s := open(t)
	base := layer(t,
		entry{name: "etc/", typ: tar.TypeDir, mode: 0o750, uid: 7, gid: 8},
		entry{name: "etc/a", body: "alpha", mode: 0o640, uid: 1000, gid: 2000},
		entry{name: "etc/b", body: "beta"},
		entry{name: "etc/hard", typ: tar.TypeLink, link: "etc/a"},
		entry{name: "bin/su", body: "su", mode: 0o4755},
		entry{name: "link", typ: tar.TypeSymlink, link: "/etc/a"},
		entry{name: "dir/x", body: "x"},
		entry{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o600},
	)
	top := layer(t,
		entry{name: "etc/.wh.b", body: ""},
		entry{name: "dir/.wh..wh..opq", body: ""},
		entry{name: "dir/y", body: "y"},
	)
	img := image(t, "/bin/su", base, top)
	if _, err := s.ImportFile(dockerArchive(t, map[string]v1.Image{"example.com/layers:1": img})); err != nil {
		t.Fatal(err)
	}
	id, dirs, cfg, err := s.Resolve("example.com/layers:1")
	if err != nil {
		t.Fatal(err)
	}
	if id != imageID(t, img) || len(dirs) != 2 || cfg.Config.Entrypoint[0] != "/bin/su" {
		t.Fatalf("Resolve = %s, %v, %+v", id, dirs, cfg.Config)
	}
	lower, upper := dirs[0], dirs[1]
	checkFile := func(dir, rel, body string, mode fs.FileMode, uid, gid uint32) {
		t.Helper()
		p := filepath.Join(dir, rel)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != body {
			t.Errorf("%s: %q, %v; want %q", rel, b, err, body)
			return
		}
		fi, _ := os.Lstat(p)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
		}
	}
	checkFile(lower, "etc/a", "alpha", 0o640, 1000, 2000)
	checkFile(lower, "etc/b", "beta", 0o644, 0, 0)
	checkFile(lower, "bin/su", "su", 0o755|fs.ModeSetuid, 0, 0)
	if fi, err := os.Stat(filepath.Join(lower, "etc")); err != nil || fi.Mode().Perm() != 0o750 || fi.Sys().(*syscall.Stat_t).Uid != 7 {
		t.Errorf("etc: %v, %v", fi.Mode(), err)
	}
	if fi, _ := os.Stat(filepath.Join(lower, "etc")); !fi.ModTime().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("etc mtime %v, want the entry's", fi.ModTime())
	}
	if target, err := os.Readlink(filepath.Join(lower, "link")); err != nil || target != "/etc/a" {
		t.Errorf("link -> %q, %v", target, err)
	}
	a, _ := os.Stat(filepath.Join(lower, "etc/a"))
	h, _ := os.Stat(filepath.Join(lower, "etc/hard"))
	if h == nil || a.Sys().(*syscall.Stat_t).Ino != h.Sys().(*syscall.Stat_t).Ino {
		t.Errorf("etc/hard is not a hard link of etc/a")
	}
	if fi, err := os.Lstat(filepath.Join(lower, "dev/fifo")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Errorf("dev/fifo: %v, %v", fi, err)
	}
	// The whiteout is a 0/0 character device, the opaque marker an xattr.
	fi, err := os.Lstat(filepath.Join(upper, "etc/b"))
	if err != nil || fi.Mode()&fs.ModeCharDevice == 0 || fi.Sys().(*syscall.Stat_t).Rdev != 0 {
		t.Errorf("etc/b in the top layer: %v, %v; want a 0/0 character device", fi, err)
	}
	val := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(upper, "dir"), "trusted.overlay.opaque", val)
	if err != nil || string(val[:n]) != "y" {
		t.Errorf("dir opaque xattr = %q, %v", val[:n], err)
	}
	for _, marker := range []string{"etc/.wh.b", "dir/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(upper, marker)); err == nil {
			t.Errorf("%s left in the layer", marker)
		}
	}

	// Mounted as overlayfs lowerdirs, the layers give the merged view.
	mnt := t.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+upper+":"+lower); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	if _, err := os.Lstat(filepath.Join(mnt, "etc/b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("whited-out etc/b is visible in the merged view: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "dir/x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dir/x below the opaque dir is visible in the merged view: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "dir/y")); err != nil || string(b) != "y" {
		t.Errorf("dir/y in the merged view: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/a")); err != nil || string(b) != "alpha" {
		t.Errorf("etc/a in the merged view: %q, %v", b, err)
	}
}

// rawImage makes an image from uncompressed tar bytes, bypassing any checks.
func rawImage(t *testing.T, b []byte) v1.Image {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestResolveRefusesEscapes(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	cases := map[string][]entry{
		"dotdot":  {{name: "../../escaped", body: "x"}},
		"symlink": {{name: "esc", typ: tar.TypeSymlink, link: outside}, {name: "esc/escaped", body: "x"}},
		"relative symlink": {{name: "a/", typ: tar.TypeDir}, {name: "a/up", typ: tar.TypeSymlink, link: "../../../../../../../../" + outside},
			{name: "a/up/escaped", body: "x"}},
		"hardlink": {{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			if _, err := s.Import(bytes.NewReader(mustDocker(t, rawImage(t, tarBytes(t, entries))))); err != nil {
				t.Fatal(err)
			}
			imgs, _ := s.List()
			_, _, _, err := s.Resolve(imgs[0].ID)
			if err == nil {
				t.Fatal("Resolve unpacked a layer that escapes its root")
			}
			t.Logf("refused: %v", err)
			if _, serr := os.Stat(filepath.Join(outside, "escaped")); serr == nil {
				t.Fatal("a file was written outside the layer")
			}
			if layers, _ := os.ReadDir(filepath.Join(s.Dir(), "layers")); len(layers) != 0 {
				t.Errorf("a refused layer was kept: %v", layers)
			}
			if tmp, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(tmp) != 0 {
				t.Errorf("a refused layer left %d entries in tmp", len(tmp))
			}
		})
	}
}

// mustDocker returns a docker-archive of one untagged image.
func mustDocker(t *testing.T, img v1.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	ref, _ := name.NewTag("example.com/x:1")
	if err := tarball.Write(ref, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestConcurrentResolve(t *testing.T) {
	needRoot(t)
	s := open(t)
	var layers []v1.Layer
	for i := 0; i < 4; i++ {
		layers = append(layers, layer(t, entry{name: "f" + string(rune('0'+i)), body: strings.Repeat("z", 1<<16)}))
	}
	img := image(t, "/f0", layers...)
	if _, err := s.ImportFile(dockerArchive(t, map[string]v1.Image{"example.com/c:1": img})); err != nil {
		t.Fatal(err)
	}
	// A second Store on the same directory stands for another process.
	other, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([][]string, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = other
			}
			_, results[i], _, errs[i] = st.Resolve("example.com/c:1")
		}(i)
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("Resolve %d: %v", i, errs[i])
		}
		if strings.Join(results[i], ",") != strings.Join(results[0], ",") {
			t.Errorf("Resolve %d = %v, want %v", i, results[i], results[0])
		}
	}
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), "layers"))
	if len(entries) != 4 || len(results[0]) != 4 {
		t.Errorf("%d layer dirs, %d in the answer; want 4", len(entries), len(results[0]))
	}
	for i, d := range results[0] {
		if b, err := os.ReadFile(filepath.Join(d, "f"+string(rune('0'+i)))); err != nil || len(b) != 1<<16 {
			t.Errorf("layer %d: %d bytes, %v", i, len(b), err)
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(tmp) != 0 {
		t.Errorf("%d entries left in tmp", len(tmp))
	}
}

func blobCount(t *testing.T, s *Store) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestRemoveFreesBlobs(t *testing.T) {
	s := open(t)
	shared := layer(t, entry{name: "shared", body: "shared"})
	a := image(t, "/a", shared, layer(t, entry{name: "a", body: "a"}))
	b := image(t, "/b", shared, layer(t, entry{name: "b", body: "b"}))
	if _, err := s.ImportFile(dockerArchive(t, map[string]v1.Image{"example.com/a:1": a, "example.com/a:2": a, "example.com/b:1": b})); err != nil {
		t.Fatal(err)
	}
	unpack := os.Geteuid() == 0
	if unpack {
		for _, ref := range []string{"example.com/a:1", "example.com/b:1"} {
			if _, _, _, err := s.Resolve(ref); err != nil {
				t.Fatal(err)
			}
		}
	}
	// 3 layers + 2 configs + 2 manifests.
	if n := blobCount(t, s); n != 7 {
		t.Fatalf("%d blobs, want 7", n)
	}
	// Removing one of two tags keeps the image.
	if id, err := s.Remove("example.com/a:2"); err != nil || id != "" {
		t.Fatalf("Remove(a:2) = %q, %v", id, err)
	}
	if _, err := s.Get("example.com/a:1"); err != nil {
		t.Fatalf("a:1 gone with a:2: %v", err)
	}
	if n := blobCount(t, s); n != 7 {
		t.Fatalf("%d blobs after removing a tag, want 7", n)
	}
	if id, err := s.Remove("example.com/a:1"); err != nil || id != imageID(t, a) {
		t.Fatalf("Remove(a:1) = %q, %v", id, err)
	}
	if n := blobCount(t, s); n != 4 {
		t.Errorf("%d blobs after removing a, want 4 (b's)", n)
	}
	if unpack {
		if layers, _ := os.ReadDir(filepath.Join(s.Dir(), "layers")); len(layers) != 2 {
			t.Errorf("%d layer dirs after removing a, want 2", len(layers))
		}
		if _, dirs, _, err := s.Resolve("example.com/b:1"); err != nil || len(dirs) != 2 {
			t.Errorf("b after removing a: %v, %v", dirs, err)
		}
	}
	if _, err := s.Remove("example.com/a:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	// By id, the image goes with all its references.
	if _, err := s.Remove(imageID(t, b)); err != nil {
		t.Fatal(err)
	}
	if n := blobCount(t, s); n != 0 {
		t.Errorf("%d blobs left in an empty store", n)
	}
	if layers, _ := os.ReadDir(filepath.Join(s.Dir(), "layers")); len(layers) != 0 {
		t.Errorf("%d layer dirs left in an empty store", len(layers))
	}
}

func TestRetagKeepsOldImageUntagged(t *testing.T) {
	s := open(t)
	v1img := image(t, "/v1", layer(t, entry{name: "v", body: "1"}))
	v2img := image(t, "/v2", layer(t, entry{name: "v", body: "2"}))
	for _, img := range []v1.Image{v1img, v2img} {
		if _, err := s.ImportFile(dockerArchive(t, map[string]v1.Image{"example.com/app:latest": img})); err != nil {
			t.Fatal(err)
		}
	}
	imgs, _ := s.List()
	if len(imgs) != 2 || tagsOf(imgs)["example.com/app:latest"] != imageID(t, v2img) {
		t.Fatalf("List = %+v", imgs)
	}
	if old, err := s.Get(imageID(t, v1img)); err != nil || len(old.RepoTags) != 0 {
		t.Errorf("the retagged-away image: %+v, %v", old, err)
	}
}

func TestRemoveUnusedAndDiskUsage(t *testing.T) {
	s := open(t)
	a := image(t, "/a", layer(t, entry{name: "a", body: strings.Repeat("a", 100000)}))
	b := image(t, "/b", layer(t, entry{name: "b", body: strings.Repeat("b", 100000)}))
	if _, err := s.ImportFile(dockerArchive(t, map[string]v1.Image{"example.com/a:1": a, "example.com/b:1": b})); err != nil {
		t.Fatal(err)
	}
	before, err := s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	if before.BlobBytes <= 0 || before.Capacity == 0 || before.Inodes < 6 {
		t.Fatalf("DiskUsage = %+v", before)
	}
	removed, err := s.RemoveUnused(func(id string) bool { return id == imageID(t, a) })
	if err != nil || len(removed) != 1 || removed[0] != imageID(t, b) {
		t.Fatalf("RemoveUnused = %v, %v", removed, err)
	}
	after, err := s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	if after.BlobBytes >= before.BlobBytes {
		t.Errorf("blob bytes %d -> %d after removing an image", before.BlobBytes, after.BlobBytes)
	}
	imgs, _ := s.List()
	if len(imgs) != 1 || imgs[0].ID != imageID(t, a) {
		t.Errorf("List after RemoveUnused = %+v", imgs)
	}
}

// basicAuth guards a handler with one username and password, as a
// registry with htpasswd would.
func basicAuth(user, pass string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func pushTo(t *testing.T, ref string, img v1.Image, auth authn.Authenticator) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuth(auth)); err != nil {
		t.Fatal(err)
	}
}

func TestPullFromLocalRegistry(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img := image(t, "/pulled", layer(t, entry{name: "pulled", body: "over the wire"}))
	ref := host + "/test/app:1"
	pushTo(t, ref, img, authn.Anonymous)

	s := open(t)
	ctx := context.Background()
	id, err := s.Pull(ctx, ref, nil, []string{host})
	if err != nil {
		t.Fatal(err)
	}
	if id != imageID(t, img) {
		t.Fatalf("Pull = %s, want %s", id, imageID(t, img))
	}
	got, err := s.Get(ref)
	if err != nil || len(got.RepoTags) != 1 || got.RepoTags[0] != ref {
		t.Fatalf("Get after pull = %+v, %v", got, err)
	}
	// By digest too.
	digest, _ := img.Digest()
	if id, err := s.Pull(ctx, host+"/test/app@"+digest.String(), nil, []string{host}); err != nil || id != imageID(t, img) {
		t.Fatalf("Pull by digest = %s, %v", id, err)
	}
	if os.Geteuid() == 0 {
		_, dirs, _, err := s.Resolve(ref)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dirs[0], "pulled")); err != nil || string(b) != "over the wire" {
			t.Errorf("pulled layer: %q, %v", b, err)
		}
	}
	if _, err := s.Pull(ctx, host+"/test/missing:1", nil, []string{host}); err == nil {
		t.Error("pull of a missing image succeeded")
	}
}

func TestPullWithCredentials(t *testing.T) {
	srv := httptest.NewServer(basicAuth("alice", "s3cret", registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img := image(t, "/private", layer(t, entry{name: "private", body: "secret"}))
	ref := host + "/private/app:1"
	pushTo(t, ref, img, &authn.Basic{Username: "alice", Password: "s3cret"})

	s := open(t)
	ctx := context.Background()
	for _, auth := range []*Auth{nil, {Username: "alice", Password: "wrong"}} {
		_, err := s.Pull(ctx, ref, auth, []string{host})
		if err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "UNAUTHORIZED") {
			t.Errorf("pull with %+v: %v, want an unauthorized error", auth, err)
		}
		t.Logf("pull with %+v: %v", auth, err)
		if err != nil && !strings.Contains(err.Error(), ref) {
			t.Errorf("pull error does not name the image: %v", err)
		}
	}
	if n := blobCount(t, s); n != 0 {
		t.Errorf("failed pulls left %d blobs", n)
	}
	id, err := s.Pull(ctx, ref, &Auth{Username: "alice", Password: "s3cret"}, []string{host})
	if err != nil || id != imageID(t, img) {
		t.Fatalf("pull with good credentials = %s, %v", id, err)
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                      "docker.io/library/busybox:latest",
		"busybox:1.36":                 "docker.io/library/busybox:1.36",
		"docker.io/library/busybox:1":  "docker.io/library/busybox:1",
		"index.docker.io/foo/bar":      "docker.io/foo/bar:latest",
		"navarch.io/testserver:1":      "navarch.io/testserver:1",
		"127.0.0.1:5000/x/y:2":         "127.0.0.1:5000/x/y:2",
		"quay.io/a/b@sha256:" + hex64a: "quay.io/a/b@sha256:" + hex64a,
	} {
		if got, err := Normalize(in); err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := Normalize("UPPER/case"); err == nil {
		t.Error("Normalize accepted an invalid reference")
	}
}

const hex64a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// TestOpenCleansDeadWork checks that tmp entries of a process that no longer
// runs are removed, as after a crash mid-unpack.
func TestOpenCleansDeadWork(t *testing.T) {
	s := open(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no `true` to get a dead pid from")
	}
	dead := filepath.Join(s.Dir(), "tmp", strconv.Itoa(cmd.Process.Pid)+"-layer-123")
	mine := filepath.Join(s.Dir(), "tmp", strconv.Itoa(os.Getpid())+"-layer-456")
	os.MkdirAll(dead, 0o700)
	os.MkdirAll(mine, 0o700)
	if _, err := Open(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); err == nil {
		t.Error("a dead process's work was kept")
	}
	if _, err := os.Stat(mine); err != nil {
		t.Error("a live process's work was removed")
	}
}

// TestImportDockerSaveUncompressed imports an archive laid out as `docker
// save` writes it: uncompressed layer.tar files and a config named by its
// digest.
func TestImportDockerSaveUncompressed(t *testing.T) {
	layerTar := tarBytes(t, []entry{{name: "bin/", typ: tar.TypeDir}, {name: "bin/hello", body: "hi", mode: 0o755}})
	img := rawImage(t, layerTar)
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgName, _ := img.ConfigName()
	manifest := `[{"Config":"` + cfgName.Hex + `.json","RepoTags":["hello:latest"],"Layers":["0123/layer.tar"]}]`
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		body []byte
	}{{"0123/layer.tar", layerTar}, {cfgName.Hex + ".json", cfg}, {"manifest.json", []byte(manifest)}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
		tw.Write(f.body)
	}
	tw.Close()
	s := open(t)
	refs, err := s.Import(&buf)
	if err != nil || len(refs) != 1 || refs[0] != "docker.io/library/hello:latest" {
		t.Fatalf("Import = %v, %v", refs, err)
	}
	if img, err := s.Get("hello"); err != nil || img.ID != cfgName.String() {
		t.Fatalf("Get(hello) = %+v, %v", img, err)
	}
	if os.Geteuid() == 0 {
		_, dirs, _, err := s.Resolve("hello")
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dirs[0], "bin/hello")); err != nil || string(b) != "hi" {
			t.Errorf("bin/hello: %q, %v", b, err)
		}
	}
}

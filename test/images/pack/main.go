// Command pack builds Navarch's test images from files on this machine and
// writes them as OCI image layout tarballs that `navarch image import` (and
// docker load, ctr import) read:
//
//	OUT/testserver.tar  navarch.io/testserver:1, the static test server as
//	                    /testserver (the entrypoint)
//	OUT/busybox.tar     navarch.io/busybox:1, /bin/busybox from Debian's
//	                    busybox-static with its applets as symlinks (/bin/sh)
//
// Images are reproducible: the same inputs give the same image ids. `make
// images` runs it after building the test server with CGO_ENABLED=0.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/navarch/navarch/node/images"
)

const (
	TestserverRef = "navarch.io/testserver:1"
	BusyboxRef    = "navarch.io/busybox:1"
	defaultPath   = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// epoch is every entry's and image's time, for reproducible images.
func epoch() time.Time { return time.Unix(0, 0).UTC() }

func main() {
	out := flag.String("out", "bin/images", "directory to write testserver.tar and busybox.tar into")
	server := flag.String("testserver", "bin/images/testserver", "the static testserver binary (CGO_ENABLED=0 go build ./test/images/testserver)")
	busybox := flag.String("busybox", "/bin/busybox", "a static busybox (Debian's busybox-static); empty to skip the busybox image")
	flag.Parse()
	if err := pack(*out, *server, *busybox); err != nil {
		fmt.Fprintf(os.Stderr, "pack: %v\n", err)
		os.Exit(1)
	}
}

func pack(out, server, busybox string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	img, err := testserverImage(server)
	if err != nil {
		return err
	}
	if err := write(filepath.Join(out, "testserver.tar"), TestserverRef, img); err != nil {
		return err
	}
	if busybox == "" {
		return nil
	}
	img, err = busyboxImage(busybox)
	if err != nil {
		return err
	}
	return write(filepath.Join(out, "busybox.tar"), BusyboxRef, img)
}

// file is one entry of an image layer.
type file struct {
	name string
	mode int64
	body []byte
	link string // a symlink's target
	dir  bool
}

// baseFiles are what every test image has: the usual mount points, /tmp and
// users for runAsUser tests.
func baseFiles() []file {
	return []file{
		{name: "dev", dir: true, mode: 0o755},
		{name: "proc", dir: true, mode: 0o755},
		{name: "sys", dir: true, mode: 0o755},
		{name: "etc", dir: true, mode: 0o755},
		{name: "root", dir: true, mode: 0o700},
		{name: "tmp", dir: true, mode: 0o1777},
		{name: "var", dir: true, mode: 0o755},
		{name: "etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{name: "etc/group", mode: 0o644, body: []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
}

// staticBinary reads a binary and refuses one that needs a dynamic loader:
// the images contain nothing else.
func staticBinary(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: not an ELF binary: %w", p, err)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked; build it static (CGO_ENABLED=0, or busybox-static)", p)
		}
	}
	return b, nil
}

func testserverImage(server string) (v1.Image, error) {
	b, err := staticBinary(server)
	if err != nil {
		return nil, err
	}
	files := append(baseFiles(), file{name: "testserver", mode: 0o755, body: b})
	return buildImage(files, v1.Config{
		Entrypoint:   []string{"/testserver"},
		Env:          []string{defaultPath},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		WorkingDir:   "/",
	})
}

func busyboxImage(busybox string) (v1.Image, error) {
	b, err := staticBinary(busybox)
	if err != nil {
		return nil, err
	}
	applets, err := appletPaths(busybox)
	if err != nil {
		return nil, err
	}
	files := append(baseFiles(), file{name: "bin/busybox", mode: 0o755, body: b})
	for _, a := range applets {
		if a == "bin/busybox" {
			continue
		}
		files = append(files, file{name: a, link: "/bin/busybox"})
	}
	return buildImage(files, v1.Config{
		Cmd:        []string{"sh"},
		Env:        []string{defaultPath},
		WorkingDir: "/",
	})
}

// appletPaths asks busybox where its applets live (bin/sh, usr/bin/wget,
// ...); a busybox without --list-full puts them all in bin/.
func appletPaths(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		if out, err = exec.Command(busybox, "--list").Output(); err != nil {
			return nil, fmt.Errorf("%s --list: %w", busybox, err)
		}
		var paths []string
		for _, a := range strings.Fields(string(out)) {
			paths = append(paths, "bin/"+a)
		}
		return paths, nil
	}
	paths := strings.Fields(string(out))
	sort.Strings(paths)
	return paths, nil
}

// buildImage makes a one-layer OCI image of files with config cfg.
func buildImage(files []file, cfg v1.Config) (v1.Image, error) {
	layerTar, err := tarFiles(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: epoch()}, CreatedBy: "navarch test/images/pack"}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch()}
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// tarFiles writes files as a tar, parents first, owned by root.
func tarFiles(files []file) ([]byte, error) {
	dirs := map[string]bool{}
	var entries []file
	var addParents func(name string)
	addParents = func(name string) {
		parent := path.Dir(name)
		if parent == "." || dirs[parent] {
			return
		}
		addParents(parent)
		dirs[parent] = true
		entries = append(entries, file{name: parent, dir: true, mode: 0o755})
	}
	for _, f := range files {
		addParents(f.name)
		if f.dir {
			if dirs[f.name] {
				continue
			}
			dirs[f.name] = true
		}
		entries = append(entries, f)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range entries {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch(), Typeflag: tar.TypeReg, Size: int64(len(f.body)), Format: tar.FormatPAX}
		switch {
		case f.dir:
			hdr.Typeflag, hdr.Name, hdr.Size = tar.TypeDir, f.name+"/", 0
		case f.link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode, hdr.Size = tar.TypeSymlink, f.link, 0o777, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// write writes img under ref as an OCI layout tarball, through a temporary
// file so an interrupted run leaves no truncated tarball.
func write(p, ref string, img v1.Image) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), ".pack-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = images.WriteOCIArchive(tmp, []images.Named{{Ref: ref, Image: img}})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	id, _ := img.ConfigName()
	fmt.Printf("%s: %s (%s)\n", p, ref, id)
	return nil
}

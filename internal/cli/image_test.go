package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func runImageCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := Main(append([]string{"image"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestImageImportListRemove(t *testing.T) {
	dataDir := t.TempDir()
	img, err := random.Image(1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("example.com/cli/app:1")
	archive := filepath.Join(t.TempDir(), "app.tar")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigName()

	code, out, errOut := runImageCmd("import", archive, "--data-dir", dataDir)
	if code != 0 || out != "Loaded image: example.com/cli/app:1\n" {
		t.Fatalf("import: %d %q %q", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "images", "index.json")); err != nil {
		t.Fatalf("the store is not at DATA_DIR/images: %v", err)
	}
	code, out, errOut = runImageCmd("ls", "--data-dir", dataDir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "IMAGE") {
		t.Fatalf("ls: %d %q %q", code, out, errOut)
	}
	fields := strings.Fields(lines[1])
	if len(fields) != 4 || fields[0] != "example.com/cli/app" || fields[1] != "1" || fields[2] != cfg.Hex[:13] {
		t.Errorf("ls line %q", lines[1])
	}

	code, _, errOut = runImageCmd("rm", "--data-dir", dataDir, "example.com/cli/nope:1")
	if code != 1 || errOut != "navarch: no such image: example.com/cli/nope:1\n" {
		t.Errorf("rm of an unknown image: %d %q", code, errOut)
	}
	code, out, errOut = runImageCmd("rm", "--data-dir", dataDir, "example.com/cli/app:1")
	if code != 0 || out != "Deleted: "+cfg.String()+"\n" {
		t.Fatalf("rm: %d %q %q", code, out, errOut)
	}
	code, out, _ = runImageCmd("ls", "--data-dir", dataDir)
	if code != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("ls after rm: %d %q", code, out)
	}
}

func TestImageErrors(t *testing.T) {
	dataDir := t.TempDir()
	notTar := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(notTar, []byte(strings.Repeat("not an archive\n", 50)), 0o644)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"import", "--data-dir", dataDir, "/nonexistent/x.tar"}, 1, "no such file or directory"},
		{[]string{"import", "--data-dir", dataDir, notTar}, 1, "not a tarball"},
		{[]string{"import", "--data-dir", dataDir}, 2, "missing FILE.tar"},
		{[]string{"rm", "--data-dir", dataDir}, 2, "missing REF"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"ls", "--data-dir", dataDir, "extra"}, 2, "unexpected argument"},
	} {
		code, _, errOut := runImageCmd(c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("navarch image %v: %d %q, want %d and %q", c.args, code, errOut, c.code, c.want)
		}
		if c.code == 1 && strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("navarch image %v: error is not one line: %q", c.args, errOut)
		}
	}
}

package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/navarch/navarch/node/images"
)

const imageUsage = `Usage:
  navarch image import [--data-dir DIR] FILE.tar...   import OCI layout or docker-archive tarballs
  navarch image ls [--data-dir DIR]                   list images
  navarch image rm [--data-dir DIR] REF...            remove images (by reference or id)

The store is DATA_DIR/images (default data dir /var/lib/navarch), the one the
node agent uses.
`

// runImage runs `navarch image SUBCOMMAND`: the node's image store for
// machines without a registry.
func runImage(args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprint(stderr, imageUsage)
		return 2
	}
	sub := args[0]
	switch sub {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, imageUsage)
		return 0
	case "import", "ls", "list", "rm", "remove":
	default:
		fmt.Fprintf(stderr, "navarch image: unknown command %q\n%s", sub, imageUsage)
		return 2
	}
	fs := flag.NewFlagSet("navarch image "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "/var/lib/navarch", "data directory; images are stored in DATA_DIR/images")
	// Flags may come before or after the arguments.
	var rest []string
	for left := args[1:]; ; {
		if err := fs.Parse(left); err != nil {
			if err == flag.ErrHelp {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		left = fs.Args()[1:]
	}
	switch {
	case (sub == "import" || sub == "rm" || sub == "remove") && len(rest) == 0:
		fmt.Fprintf(stderr, "navarch image %s: missing %s\n", sub, map[bool]string{true: "FILE.tar", false: "REF"}[sub == "import"])
		return 2
	case (sub == "ls" || sub == "list") && len(rest) > 0:
		fmt.Fprintf(stderr, "navarch image %s: unexpected argument %q\n", sub, rest[0])
		return 2
	}
	store, err := images.Open(filepath.Join(*dataDir, "images"))
	if err != nil {
		return exitOnError(stderr, err)
	}
	switch sub {
	case "import":
		for _, file := range rest {
			refs, err := store.ImportFile(file)
			if err != nil {
				return exitOnError(stderr, err)
			}
			for _, ref := range refs {
				fmt.Fprintf(stdout, "Loaded image: %s\n", ref)
			}
		}
	case "ls", "list":
		list, err := store.List()
		if err != nil {
			return exitOnError(stderr, err)
		}
		printImages(stdout, list)
	case "rm", "remove":
		failed := false
		for _, ref := range rest {
			id, err := store.Remove(ref)
			if err != nil {
				if errors.Is(err, images.ErrNotFound) {
					err = fmt.Errorf("no such image: %s", ref)
				}
				fmt.Fprintf(stderr, "navarch: %v\n", err)
				failed = true
				continue
			}
			if id == "" {
				fmt.Fprintf(stdout, "Untagged: %s\n", ref)
			} else {
				fmt.Fprintf(stdout, "Deleted: %s\n", id)
			}
		}
		if failed {
			return 1
		}
	}
	return 0
}

// printImages lists images one line per tag, as crictl images does.
func printImages(w io.Writer, list []images.Image) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tTAG\tIMAGE ID\tSIZE")
	for _, img := range list {
		id := strings.TrimPrefix(img.ID, "sha256:")
		if len(id) > 13 {
			id = id[:13]
		}
		size := humanSize(img.Size)
		if len(img.RepoTags) == 0 {
			repo := "<none>"
			if len(img.RepoDigests) > 0 {
				repo, _, _ = strings.Cut(img.RepoDigests[0], "@")
			}
			fmt.Fprintf(tw, "%s\t<none>\t%s\t%s\n", repo, id, size)
		}
		for _, tag := range img.RepoTags {
			i := strings.LastIndex(tag, ":")
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", tag[:i], tag[i+1:], id, size)
		}
	}
	tw.Flush()
}

// humanSize prints bytes in decimal units with three significant digits
// (4.21MB), as docker and crictl do.
func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	switch {
	case i == 0:
		return fmt.Sprintf("%dB", n)
	case f >= 100:
		return fmt.Sprintf("%.0f%s", f, units[i])
	case f >= 10:
		return fmt.Sprintf("%.1f%s", f, units[i])
	}
	return fmt.Sprintf("%.2f%s", f, units[i])
}

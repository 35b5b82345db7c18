package cli

import "testing"

func TestKubeconfigEnv(t *testing.T) {
	cases := []struct {
		env  string
		args []string
		want string
		set  bool
	}{
		{"", []string{"get", "pods"}, DefaultKubeconfigPath, true},
		{"/home/me/.kube/config", []string{"get", "pods"}, "", false},
		{"", []string{"--kubeconfig", "/x", "get", "pods"}, "", false},
		{"", []string{"get", "--kubeconfig=/x", "pods"}, "", false},
		{"", []string{"exec", "p", "--", "--kubeconfig"}, DefaultKubeconfigPath, true},
	}
	for _, c := range cases {
		got, set := kubeconfigEnv(c.env, c.args)
		if got != c.want || set != c.set {
			t.Errorf("kubeconfigEnv(%q, %v) = %q, %v; want %q, %v", c.env, c.args, got, set, c.want, c.set)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	base, size, err := parsePortRange("30000-32767")
	if err != nil || base != 30000 || size != 2768 {
		t.Fatalf("parsePortRange: %d %d %v", base, size, err)
	}
	for _, bad := range []string{"", "30000", "b-a", "32767-30000", "0-10", "1-70000"} {
		if _, _, err := parsePortRange(bad); err == nil {
			t.Errorf("parsePortRange(%q) accepted", bad)
		}
	}
}

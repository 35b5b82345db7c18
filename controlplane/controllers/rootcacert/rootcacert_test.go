package rootcacert_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/rootcacert"
)

const ca = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

func TestEveryNamespaceGetsTheRootCA(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory := informers.NewSharedInformerFactory(s.Client, 0)
	go rootcacert.New(s.Client, factory, []byte(ca)).Run(ctx)
	if _, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	published := func(ns string) func() error {
		return func() error {
			cm, err := s.Client.CoreV1().ConfigMaps(ns).Get(ctx, rootcacert.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cm.Data["ca.crt"] != ca || len(cm.Data) != 1 || cm.Annotations[rootcacert.DescriptionAnnotation] == "" {
				return fmt.Errorf("configmap %s/%s is %v %v", ns, cm.Name, cm.Data, cm.Annotations)
			}
			return nil
		}
	}
	for _, ns := range []string{"default", "kube-system", "team"} {
		apiservertest.Eventually(t, 10*time.Second, "kube-root-ca.crt in "+ns, published(ns))
	}

	// Deleted, it comes back.
	before, _ := s.Client.CoreV1().ConfigMaps("team").Get(ctx, rootcacert.Name, metav1.GetOptions{})
	if err := s.Client.CoreV1().ConfigMaps("team").Delete(ctx, rootcacert.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 10*time.Second, "kube-root-ca.crt re-created", func() error {
		cm, err := s.Client.CoreV1().ConfigMaps("team").Get(ctx, rootcacert.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.UID == before.UID {
			return fmt.Errorf("still the deleted one")
		}
		return published("team")()
	})

	// Changed, it is put right; a label a user added stays.
	cm, _ := s.Client.CoreV1().ConfigMaps("team").Get(ctx, rootcacert.Name, metav1.GetOptions{})
	cm.Data = map[string]string{"ca.crt": "tampered", "extra": "x"}
	cm.Labels = map[string]string{"mine": "yes"}
	delete(cm.Annotations, rootcacert.DescriptionAnnotation)
	if _, err := s.Client.CoreV1().ConfigMaps("team").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 10*time.Second, "kube-root-ca.crt corrected", func() error {
		if err := published("team")(); err != nil {
			return err
		}
		cm, _ := s.Client.CoreV1().ConfigMaps("team").Get(ctx, rootcacert.Name, metav1.GetOptions{})
		if cm.Labels["mine"] != "yes" {
			return fmt.Errorf("labels %v", cm.Labels)
		}
		return nil
	})
}

package hubtest

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DecodeStatus reads a Kubernetes Status body, as kubectl would.
func DecodeStatus(t *testing.T, contentType string, body []byte) metav1.Status {
	t.Helper()
	assert.Equal(t, "application/json", contentType)
	var st metav1.Status
	require.NoError(t, json.Unmarshal(body, &st), "body: %s", body)
	assert.Equal(t, "Status", st.Kind)
	assert.Equal(t, "v1", st.APIVersion)
	assert.Equal(t, metav1.StatusFailure, st.Status)
	return st
}

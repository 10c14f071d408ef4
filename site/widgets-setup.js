// Loaded on pages with widgets, between require.js and the ipywidgets HTML manager (embed-amd.js).
(function () {
  // 1. The manager finds its own files (the icon fonts of the controls) through require.js, relative
  //    to the module "@jupyter-widgets/html-manager/dist": point that at the copy this site serves.
  if (typeof require !== "undefined" && document.currentScript) {
    var here = document.currentScript.src;
    var vendor = here.slice(0, here.lastIndexOf("/") + 1);
    require.config({ paths: { "@jupyter-widgets/html-manager/dist": vendor + "html-manager/dist" } });
  }
  // 2. The controls typeset their labels with the MathJax 2 API (MathJax.Hub.Queue), which MathJax 3
  //    lacks: give MathJax 3 that one call, done by its typesetPromise. The widgets are drawn once the
  //    document is parsed, after MathJax (a deferred script) has loaded.
  var hub = {
    Queue: function (job) {
      var mj = window.MathJax, element = job && job[2];
      if (mj && mj.typesetPromise && mj.startup && mj.startup.promise) {
        mj.startup.promise.then(function () { return mj.typesetPromise(element ? [element] : undefined); });
      }
    },
  };
  function install() {
    if (window.MathJax && !window.MathJax.Hub) window.MathJax.Hub = hub;
  }
  install();
  document.addEventListener("DOMContentLoaded", install);
})();
